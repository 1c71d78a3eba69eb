"""docker-compose.yml, the Dockerfile and the README's Docker commands hold together (no Docker
engine runs here, so they are read, not built): every command parses against the CLI's real
options, every ``BOT_*`` config variable loads, dependencies wait for health, volumes are
declared, nothing holds a password, the Dockerfile copies what exists and runs ``bot``."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from bot.cli import app
from bot.config import load_config
from tests.conftest import DATA_DIR

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
BOT_IMAGE = ("bot", "dashboard")  # the services that run the project's image
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
_SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|API_KEY")


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


ENV_EXAMPLE = _env_file(ROOT / ".env.example")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}`` (``$$`` escapes)."""
    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op in ("-", ":-") and unset:
            return arg
        if op in ("?", ":?") and unset:
            raise AssertionError(f"${{{name}}} is required: {arg}")
        assert value is not None, f"${{{name}}} has no value in .env.example and no default"
        return value
    return _VAR.sub(one, text).replace("$$", "$")


def _environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _command(args: list[str]) -> Any:
    """Parse ``bot ARGS`` with the CLI's own click command: unknown options, missing values and
    bad types raise exactly as they would for a user; return the command's context."""
    cmd = typer.main.get_command(app)
    path = ["bot"]
    rest = list(args)
    while hasattr(cmd, "list_commands"):  # a command group: the next word names the subcommand
        assert rest, f"{' '.join(path)} needs a subcommand"
        sub = cmd.get_command(cmd.context_class(cmd), rest[0])
        assert sub is not None, f"{' '.join(path)} has no command {rest[0]!r}"
        path.append(rest.pop(0))
        cmd = sub
    return cmd.make_context(" ".join(path), rest)


def _assert_data_files(ctx: Any) -> None:
    """A ``--data`` path is /data/<a real file of the shared data> (or a bare name BOT_DATA_DIR finds)."""
    data = ctx.params.get("data")
    for item in data if isinstance(data, list) else [] if data is None else [data]:  # train: repeatable
        p = Path(item.split("=", 1)[-1])  # SYMBOL=FILE or FILE
        assert p.parent in (Path("/data"), Path(".")), item
        assert (DATA_DIR / p.name).is_file(), f"{p.name} is not a file of {DATA_DIR}"


def test_the_four_services_and_their_images() -> None:
    assert set(SERVICES) == {"postgres", "bot", "prometheus", "dashboard"}
    for name, svc in SERVICES.items():
        assert svc.get("image") or svc.get("build"), name
    for name in BOT_IMAGE:  # built once from this repository, one tag for both
        assert SERVICES[name]["build"] == "." and SERVICES[name]["image"] == SERVICES["bot"]["image"]
    assert (ROOT / "Dockerfile").is_file()
    for name in ("postgres", "prometheus"):
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", SERVICES[name]["image"]), "pin a tag"


def test_dependencies_wait_until_healthy() -> None:
    wanted = {"bot": {"postgres"}, "prometheus": {"bot"}, "dashboard": {"postgres", "bot"}}
    for name, svc in SERVICES.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        assert set(deps) == wanted.get(name, set()), name
        for dep, spec in deps.items():
            assert spec == {"condition": "service_healthy"}, (name, dep)
    for name, svc in SERVICES.items():
        test = svc["healthcheck"]["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name


def test_bot_health_and_scrape_target_agree_with_its_command() -> None:
    bot = _command(SERVICES["bot"]["command"])
    port = bot.params["metrics_port"]
    assert f"http://127.0.0.1:{port}/metrics" in " ".join(SERVICES["bot"]["healthcheck"]["test"])
    prom = yaml.safe_load((ROOT / "prometheus.yml").read_text())
    (job,) = prom["scrape_configs"]
    assert job["static_configs"] == [{"targets": [f"bot:{port}"]}]
    assert _environment("bot")["BOT_METRICS__HOST"] == "0.0.0.0"  # reachable from Prometheus' container


def test_dashboard_health_and_port_agree_with_its_command() -> None:
    dash = _command(SERVICES["dashboard"]["command"])
    assert dash.params["host"] == "0.0.0.0"
    assert f"http://127.0.0.1:{dash.params['port']}/healthz" in " ".join(SERVICES["dashboard"]["healthcheck"]["test"])
    assert SERVICES["dashboard"]["ports"] == [f"127.0.0.1:{dash.params['port']}:{dash.params['port']}"]
    assert SERVICES["prometheus"]["ports"] == ["127.0.0.1:9090:9090"]


@pytest.mark.parametrize("service", BOT_IMAGE)
def test_service_command_parses_against_the_cli(service: str) -> None:
    ctx = _command(SERVICES[service]["command"])
    assert ctx.params.get("db") is None  # the journal comes from BOT_STORAGE__URL, which `compose run` keeps
    _assert_data_files(ctx)


def test_volumes_are_declared_and_mounts_exist() -> None:
    # .env.example's DATA_DIR is where the README puts the shared data; this checkout's may be
    # elsewhere (BOT_DATA_DIR), and .env says so.
    assert ENV_EXAMPLE["DATA_DIR"] == "../shared/data"
    env = {**ENV_EXAMPLE, "DATA_DIR": str(DATA_DIR)}
    declared = set(COMPOSE["volumes"])
    used = set()
    for name, svc in SERVICES.items():
        for mount in svc.get("volumes") or []:
            source, target = interpolate(mount, env).split(":")[:2]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                used.add(source)
                assert source in declared, f"{name}: volume {source} is not declared"
            assert target.startswith("/"), (name, mount)
    assert used == declared  # no declared volume left unused
    for name in BOT_IMAGE:
        mounts = {m.split(":")[1]: m for m in (interpolate(v, ENV_EXAMPLE) for v in SERVICES[name]["volumes"])}
        assert mounts["/data"].endswith(":ro") and "checkpoints:/home/bot/work/checkpoints" in mounts.values()
    assert "pgdata:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]


def test_every_variable_is_in_env_example_and_env_is_not_committed() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    needed = {m.group(1) for m in _VAR.finditer(text) if m.group(2) not in ("-", ":-")}
    assert needed <= set(ENV_EXAMPLE), needed - set(ENV_EXAMPLE)
    assert {"POSTGRES_PASSWORD", "BOT_API_TOKEN"} <= needed
    interpolate(text, ENV_EXAMPLE)  # `cp .env.example .env` leaves nothing unset
    for ignore in (".gitignore", ".dockerignore"):  # the real secrets stay on the machine
        assert ".env" in (ROOT / ignore).read_text().split(), ignore


def test_no_password_in_the_files() -> None:
    text = (ROOT / "docker-compose.yml").read_text() + (ROOT / "Dockerfile").read_text()
    for name in SERVICES:
        for key, value in _environment(name).items():
            if _SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[^}]+\}", value), f"{name}: {key} must come from .env, not {value!r}"
            for m in re.finditer(r"://[^:/@\s]+:([^@\s]+)@", value):  # a URL's password
                assert re.fullmatch(r"\$\{[^}]+\}", m.group(1)), f"{name}: {key} holds a password literal"
    for key, value in ENV_EXAMPLE.items():
        if _SECRET_NAME.search(key) and value:
            assert value not in text, f"the placeholder of {key} is written out in a file"


@pytest.mark.parametrize("service", BOT_IMAGE)
def test_bot_variables_load_through_load_config(service: str) -> None:
    env = {k: interpolate(v, ENV_EXAMPLE) for k, v in _environment(service).items()}
    config_vars = {k: v for k, v in env.items() if k.startswith("BOT_") and "__" in k}
    assert "BOT_STORAGE__URL" in config_vars
    cfg = load_config(ROOT / "config.yaml", [], environ=config_vars)  # the file the image copies
    assert cfg.storage.url == f"postgresql+psycopg://bot:{ENV_EXAMPLE['POSTGRES_PASSWORD']}@postgres:5432/bot"
    pg = _environment("postgres")
    assert pg["POSTGRES_USER"] == "bot" and pg["POSTGRES_DB"] == "bot"


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, buf = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        buf += raw.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        word, _, rest = buf.strip().partition(" ")
        lines.append((word.upper(), rest.strip()))
        buf = ""
    return lines


def test_dockerfile_copies_what_exists_and_runs_bot() -> None:
    steps = _dockerfile()
    copies = [shlex.split(args) for word, args in steps if word == "COPY"]
    assert copies
    for args in copies:
        sources = [a for a in args if not a.startswith("--")][:-1]
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: no such file in the build context"
            assert not any(src == p or src.startswith(p + "/")
                           for p in (ROOT / ".dockerignore").read_text().split()), f"{src} is docker-ignored"
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    copied = {a[0] for a in copies}
    assert {p.rstrip("*") for p in packages["include"]} <= copied  # every package pip install . needs
    (entry,) = [json.loads(args) for word, args in steps if word == "ENTRYPOINT"]
    assert entry == ["bot"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["bot"] == "bot.cli:main"
    assert [args for word, args in steps if word == "USER"] == ["bot"]  # not root
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert "torch==2.13.0" in runs and "download.pytorch.org/whl/cpu" in runs  # the CPU wheel, pinned
    assert ("ENV", "BOT_DATA_DIR=/data") in steps


def _readme_docker() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Docker\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_docker_commands() -> None:
    commands = _readme_docker()
    assert commands[:2] == ["cp .env.example .env", "docker compose up -d"]
    assert (ROOT / ".env.example").is_file()
    runs = [c for c in commands if c.startswith("docker compose run --rm bot ")]
    assert len(runs) >= 4
    for line in runs:
        ctx = _command(shlex.split(line)[len("docker compose run --rm bot".split()):])
        _assert_data_files(ctx)
    text = (ROOT / "README.md").read_text()
    assert "http://localhost:8080" in text and "http://localhost:9090" in text
