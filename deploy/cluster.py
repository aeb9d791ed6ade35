"""``deploy/local-cluster``: compose.yaml's topology on loopback, without containers.

    deploy/local-cluster up [--replicas N]   # nginx → N `dust serve` → the running PostgreSQL and Redis; a worker
    deploy/local-cluster down [--drop]       # stops what `up` started (by the pids it recorded), and nothing else

``up`` creates and migrates a database of its own on the PostgreSQL server (``dust_cluster``), starts the replicas
and one ``dust worker`` on it with ``DUST_REDIS_URL``, and nginx (Debian's package: ``make cluster`` installs it)
in front with a configuration, pid and logs of its own; creates an admin and an API key, prints ``balancer=URL``,
one ``replica=URL`` a replica and ``token=KEY``, and returns while the processes stay up. Everything it keeps is
in the run directory (``.cluster/``: state.json, logs, nginx.conf).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's: dust is installed beside this Python
START_SECONDS = 60  # a cold start imports NumPy, pandas and FastAPI: seconds on a busy 2-core machine
STOP_SECONDS = 40  # DUST_SHUTDOWN_GRACE_SECONDS (30) for requests in progress, and some to spare
NGINX = """\
# Written by deploy/local-cluster: deploy/nginx.conf's balancing on loopback.
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {run}/nginx-access.log;
    client_body_temp_path {run}/nginx-body;
    proxy_temp_path {run}/nginx-proxy;
    fastcgi_temp_path {run}/nginx-fastcgi;
    uwsgi_temp_path {run}/nginx-uwsgi;
    scgi_temp_path {run}/nginx-scgi;
    upstream dust {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 33m;
        location / {{
            proxy_pass http://dust;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Request-ID $request_id;
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 2s;
            proxy_read_timeout 120s;
            proxy_request_buffering off;
        }}
    }}
}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(prog="deploy/local-cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=ROOT / ".cluster", help="run directory (default .cluster/)")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the cluster and print its URLs and an admin token")
    up.add_argument("--replicas", type=int, default=2, help="`dust serve` processes behind nginx (default 2)")
    up.add_argument(
        "--postgres-url",
        default=os.environ.get("PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL server that lets this user create a database (PG_URL)",
    )
    up.add_argument("--database", default="dust_cluster", help="the cluster's database, made if missing")
    up.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    down = commands.add_parser("down", help="stop everything `up` started")
    down.add_argument("--drop", action="store_true", help="drop the cluster's database too")
    args = parser.parse_args()
    run: Path = args.dir.resolve()
    if args.command == "up":
        if args.replicas < 1:
            parser.error("--replicas must be at least 1")
        cluster_up(run, args.replicas, args.postgres_url, args.database, args.redis_url)
    else:
        cluster_down(run, drop=args.drop)


# --- up --------------------------------------------------------------------------------------------------------


def cluster_up(run: Path, replicas: int, postgres_url: str, database: str, redis_url: str) -> None:
    state = _read_state(run)
    if state and any(_alive(p) for p in state["processes"]):
        print(f"Already up (run directory {run}); `deploy/local-cluster down` first to start afresh.", file=sys.stderr)
        _announce(state)
        return
    if shutil.which("nginx") is None:
        sys.exit("nginx is not installed: `make cluster` (or apt-get install -y nginx)")
    run.mkdir(parents=True, exist_ok=True)
    database_url = _create_database(postgres_url, database)
    env = {
        **os.environ,
        "DUST_DATABASE_URL": database_url,
        "DUST_REDIS_URL": redis_url,
        "DUST_SECRET_KEY": secrets.token_urlsafe(48),
        "DUST_TRUSTED_PROXIES": '["127.0.0.1"]',  # nginx, on loopback, names the client
    }
    subprocess.run([str(BIN / "dust"), "db", "upgrade"], env=env, check=True, capture_output=True)
    state = {"database": database, "postgres_url": postgres_url, "processes": [], "replicas": []}
    try:
        for n in range(replicas):
            port = _free_port()
            serve = [str(BIN / "dust"), "serve", "--port", str(port)]
            state["processes"].append(_start(run, f"replica-{n + 1}", serve, env))
            state["replicas"].append(f"http://127.0.0.1:{port}")
        state["processes"].append(_start(run, "worker", [str(BIN / "dust"), "worker"], env))
        balancer = _start_nginx(run, state["replicas"])
        state["processes"].append(balancer["process"])
        state["balancer"] = balancer["url"]
        _write_state(run, state)  # before waiting: a `down` can stop what started even if a start fails
        for url in [*state["replicas"], state["balancer"]]:
            _wait_ready(url, state)
        state["token"] = _admin_key(env)
    except BaseException:
        _stop_all(state)
        _state_file(run).unlink(missing_ok=True)
        raise
    _write_state(run, state)
    _announce(state)


def _create_database(postgres_url: str, database: str) -> str:
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": database}).first()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{database}"'))
    finally:
        admin.dispose()
    return make_url(postgres_url).set(database=database).render_as_string(hide_password=False)


def _start(run: Path, name: str, command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Start ``command`` in a session of its own (so it outlives this script and a terminal's Ctrl-C), its output
    to ``<name>.log``."""
    with open(run / f"{name}.log", "ab") as log:
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    return {"name": name, "pid": process.pid, "command": command}


def _start_nginx(run: Path, replicas: list[str]) -> dict[str, Any]:
    port = _free_port()
    servers = "\n".join(
        f"        server {url.removeprefix('http://')} max_fails=1 fail_timeout=5s;" for url in replicas
    )
    config = run / "nginx.conf"
    config.write_text(NGINX.format(run=run, servers=servers, port=port))
    command = [shutil.which("nginx") or "nginx", "-c", str(config), "-p", str(run), "-g", "daemon off;"]
    return {"process": _start(run, "nginx", command, dict(os.environ)), "url": f"http://127.0.0.1:{port}"}


def _wait_ready(url: str, state: dict[str, Any]) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if not all(_alive(p) for p in state["processes"]):
            break
        time.sleep(0.1)
    dead = [p["name"] for p in state["processes"] if not _alive(p)]
    raise SystemExit(f"{url} did not become ready (ended: {', '.join(dead) or 'none'}); see the logs in the run dir")


def _admin_key(env: dict[str, str]) -> str:
    """An API key of the user ``admin`` (made, without a password, if missing): the token printed."""
    code = (
        "import os; from dust.embedded import Dust; from dust.engine import users; "
        "from dust.storage.repositories import users as repo\n"
        "with Dust(os.environ['DUST_DATABASE_URL'], migrate=False) as db, db.session() as s:\n"
        "    user = repo.by_username(s, 'admin') or users.create(s, users.UserCreate(username='admin', role='admin'))\n"
        "    print(users.create_key(s, db.settings, user.id, 'deploy/local-cluster').key)\n"
    )
    made = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return made.stdout.strip().splitlines()[-1]


def _announce(state: dict[str, Any]) -> None:
    print(f"balancer={state['balancer']}")
    for url in state["replicas"]:
        print(f"replica={url}")
    print(f"token={state['token']}")


# --- down ------------------------------------------------------------------------------------------------------


def cluster_down(run: Path, *, drop: bool) -> None:
    state = _read_state(run)
    if state is None:
        print("Nothing is up (no state in the run directory).", file=sys.stderr)
        return
    _stop_all(state)
    if drop:
        admin = create_engine(state["postgres_url"], isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{state["database"]}" WITH (FORCE)'))
        admin.dispose()
    _state_file(run).unlink()
    print("Stopped.", file=sys.stderr)


def _stop_all(state: dict[str, Any]) -> None:
    """SIGTERM to each recorded process still running what it was started with (nginx first: no request goes to
    a replica that is stopping), then wait; SIGKILL to the process group of any still there after that."""
    ordered = sorted(state["processes"], key=lambda p: p["name"] != "nginx")
    for process in ordered:
        if _alive(process):
            os.kill(process["pid"], signal.SIGQUIT if process["name"] == "nginx" else signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while any(_alive(p) for p in ordered) and time.monotonic() < deadline:
        time.sleep(0.1)
    for process in ordered:
        if _alive(process):
            os.killpg(process["pid"], signal.SIGKILL)  # its own session: the group is its and its children's
    for process in ordered:
        _reap(process["pid"])


def _alive(process: dict[str, Any]) -> bool:
    """Running, and still the program recorded (a pid may have been reused since)."""
    try:
        cmdline = Path(f"/proc/{process['pid']}/cmdline").read_bytes()
        status = Path(f"/proc/{process['pid']}/stat").read_text()
    except OSError:
        return False
    zombie = status.rsplit(")", 1)[1].split()[0] == "Z"
    # nginx rewrites its title ("nginx: master process /usr/sbin/nginx -c …"), keeping the arguments in it
    return not zombie and " ".join(process["command"][1:]) in cmdline.replace(b"\0", b" ").decode(errors="replace")


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child (started by an earlier `up`): init reaps it
        os.waitpid(pid, os.WNOHANG)


# --- state -----------------------------------------------------------------------------------------------------


def _state_file(run: Path) -> Path:
    return run / "state.json"


def _read_state(run: Path) -> dict[str, Any] | None:
    path = _state_file(run)
    return json.loads(path.read_text()) if path.exists() else None


def _write_state(run: Path, state: dict[str, Any]) -> None:
    path = _state_file(run)
    path.write_text(json.dumps(state, indent=2))
    path.chmod(0o600)  # it holds the admin's key


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    main()
