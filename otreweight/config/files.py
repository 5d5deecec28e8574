"""Config files: shipped configs, YAML files with their ``base:`` chain, ``--set`` overrides, and the
resolved config written back as YAML."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from .._errors import OTReweightError
from ..utils import load_yaml, parse_assignment
from .fields import Section, _fail, _plain, build
from .sections import RunConfig, Stage2Config

# ----------------------------------------------------------------------------- loading
def config_dir() -> Path:
    """The folder of the ready configs shipped with the package."""
    return Path(__file__).parent.parent / "configs"


def resolve_config_path(name, relative_to: Path | None = None) -> Path:
    """A config path as given (or relative to ``relative_to``), or a shipped config's name."""
    p = Path(name)
    candidates = [p] if p.is_absolute() else ([relative_to / p] if relative_to else []) + [p]
    for c in candidates:
        if c.is_file():
            return c
    shipped = config_dir() / (str(name) if str(name).endswith(".yaml") else f"{name}.yaml")
    if shipped.is_file():
        return shipped
    alt = Path("configs") / p.name
    if alt.is_file():
        return alt
    names = sorted(q.stem for q in config_dir().glob("*.yaml"))
    raise OTReweightError(f"config {str(name)!r} not found; give a path or one of: {', '.join(names)}")


def read_config_file(path, _seen: tuple = ()) -> dict:
    """The mapping of a YAML config file with its ``base:`` chain merged in (the file wins)."""
    p = Path(path)
    if not p.exists():
        raise OTReweightError(f"config file {p} does not exist; see configs/ for examples")
    key = str(p.resolve())
    if key in _seen:
        raise OTReweightError(f"config file {p} names itself through its base: chain; remove the loop")
    try:
        user = load_yaml(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise OTReweightError(f"config file {p} is not valid YAML: {str(err).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise OTReweightError(f"config file {p} is not UTF-8 text") from None
    if not isinstance(user, dict):
        raise OTReweightError(f"config file {p} must hold a mapping at the top level")
    base = user.pop("base", None)
    if base is None:
        return user
    if not isinstance(base, str):
        raise OTReweightError(f"base in {p} must be a path or a shipped config name, got {base!r}")
    parent = read_config_file(resolve_config_path(base, p.parent), _seen + (key,))
    return merge(parent, user)


def merge(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``: mappings merged key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        if isinstance(out.get(k), dict) and isinstance(v, dict) and k != "options":
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def set_dotted(cfg: dict, dotted: str, value) -> None:
    """Set ``a.b.c`` (``*`` or an index inside lists) in a nested mapping; unknown keys refused."""
    parts = dotted.split(".")
    targets = [cfg]
    for i, part in enumerate(parts[:-1]):
        nxt = []
        for t in targets:
            if isinstance(t, list):
                if part == "*":
                    nxt.extend(t)
                    continue
                if not part.isdigit() or int(part) >= len(t):
                    raise OTReweightError(f"--set {dotted}: {part!r} is not an index of a list of {len(t)}")
                nxt.append(t[int(part)])
            elif isinstance(t, dict):
                if part not in t:
                    raise OTReweightError(f"--set {dotted}: unknown key {'.'.join(parts[: i + 1])!r}")
                if t[part] is None and part == "options":
                    t[part] = {}
                nxt.append(t[part])
            else:
                raise OTReweightError(f"--set {dotted}: {'.'.join(parts[:i])!r} holds a value, not a section")
        targets = nxt
    for t in targets:
        if isinstance(t, list):
            raise OTReweightError(f"--set {dotted}: give a list index or * before the last key")
        if not isinstance(t, dict):
            raise OTReweightError(f"--set {dotted}: {'.'.join(parts[:-1])!r} holds a value, not a section")
        if parts[-1] not in t and not (len(parts) >= 2 and parts[-2] in ("options", "modality_options", "source_options")):
            raise OTReweightError(f"--set {dotted}: unknown key {dotted!r}")
        t[parts[-1]] = value


def _full_dict(user: dict) -> dict:
    """Defaults with the user's mapping on top (stage-2 variants filled from their defaults)."""
    user = dict(user)
    stage2 = user.pop("stage2", [])
    if stage2 is None:
        stage2 = []
    if not isinstance(stage2, list):
        raise OTReweightError("config key 'stage2' must be a list of stage-2 variants")
    defaults = RunConfig().to_dict()
    for k, v in user.items():
        if k not in defaults:
            raise OTReweightError(f"unknown config key {k!r}; known keys here: {', '.join(defaults)}")
        if isinstance(defaults[k], dict) and k != "options":
            if not isinstance(v, dict):
                raise _fail(k, v, dict)
            for sub in v:
                if sub not in defaults[k]:
                    raise OTReweightError(
                        f"unknown config key {k + '.' + str(sub)!r}; known keys here: {', '.join(defaults[k])}"
                    )
    out = merge(defaults, user)
    s2_default = Stage2Config().to_dict()
    variants = []
    for i, v in enumerate(stage2):
        if v is not None and not isinstance(v, dict):
            raise _fail(f"stage2.{i}", v, dict)
        unknown = [k for k in (v or {}) if k not in s2_default]
        if unknown:
            raise OTReweightError(
                f"unknown config key 'stage2[{i}].{unknown[0]}'; known keys here: {', '.join(s2_default)}"
            )
        variants.append(merge(s2_default, v or {}))
    out["stage2"] = variants
    return out


def load_config(path=None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults, then the YAML file at ``path`` (with its ``base:`` chain), then ``KEY=VALUE``
    overrides (values parsed as YAML); type-checked and validated."""
    user = read_config_file(path) if path is not None else {}
    raw = _full_dict(user)
    for item in overrides or []:
        key, value = parse_assignment(item, "--set")
        set_dotted(raw, key, value)
        if key == "stage2" and isinstance(raw["stage2"], list):  # variants given whole: fill their defaults
            raw["stage2"] = _full_dict({"stage2": raw["stage2"]})["stage2"]
    if not isinstance(raw.get("stage2"), list):
        raise _fail("stage2", raw.get("stage2"), list[Stage2Config])
    return build(RunConfig, raw).validate()


def as_run_config(cfg) -> RunConfig:
    """A :class:`RunConfig` from itself or from a plain mapping (type-checked and validated)."""
    if isinstance(cfg, RunConfig):  # rebuilt: a caller may have put plain mappings into it
        cfg = _plain(cfg)
    if isinstance(cfg, dict):
        return build(RunConfig, _full_dict(cfg)).validate()
    raise OTReweightError(f"a run config must be a RunConfig or a mapping, got {type(cfg).__name__}")


class _ConfigDumper(yaml.SafeDumper):
    """PyYAML's safe dumper writing a config section as its plain mapping (a subclass: PyYAML's
    own ``SafeDumper``, and every other user's ``yaml.safe_dump``, stay untouched)."""


_ConfigDumper.add_multi_representer(Section, lambda dumper, v: dumper.represent_dict(v.to_dict()))


def dump_config(cfg) -> str:
    """The resolved config (or any of its sections, or a mapping holding them) as YAML: what is
    saved as ``config.yaml`` beside a run."""
    return yaml.dump(cfg.to_dict() if isinstance(cfg, Section) else cfg, Dumper=_ConfigDumper, sort_keys=False)
