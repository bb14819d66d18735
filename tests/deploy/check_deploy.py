#!/usr/bin/env python3
"""Checks the runtime and deployment files under deploy/ (ctest -L deploy).

  check_deploy.py --deploy-dir DIR [--layercached PATH] CHECK

CHECK is one of: systemd, systemd-stargz, docker, containerd, kubernetes, kubernetes-config,
dockerfile, batch, batch-lazy, release. Every layercache config found (a file, a ConfigMap's
data, the heredoc of a Batch startup script) is run through `layercached --check-config`;
every containerd config through `containerd config dump` where containerd is installed; every
shell script through `bash -n` and, where installed, shellcheck.

Exit status: 0 when everything holds, 1 on a failed check, 77 (ctest SKIP_RETURN_CODE) when a
tool the check needs is missing (systemd-analyze for `systemd` and `systemd-stargz`, PyYAML for
`kubernetes`, tomllib (Python < 3.11) for `containerd` and `batch-lazy`, --layercached where a
config must be checked). Nothing is installed.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

SKIP = 77


class Failed(Exception):
    pass


def need(cond, msg):
    if not cond:
        raise Failed(msg)


class Skipped(Exception):
    pass


def check_config_text(layercached, text, what):
    if not layercached:
        raise Skipped(f"no layercached to check {what}")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "layercache.yaml")
        with open(path, "w") as f:
            f.write(text)
        check_config_file(layercached, path, what)


def check_config_file(layercached, path, what):
    if not layercached:
        raise Skipped(f"no layercached to check {what}")
    r = subprocess.run([layercached, "--check-config", path], capture_output=True, text=True,
                       timeout=30)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    need(r.returncode == 0, f"{what}: layercached --check-config failed ({r.returncode})")


def read(path):
    with open(path) as f:
        return f.read()


def check_script(path, what):
    """bash -n, and shellcheck where it is installed (its warnings fail the check)."""
    r = subprocess.run(["bash", "-n", path], capture_output=True, text=True, timeout=30)
    need(r.returncode == 0, f"{what}: bash -n: {r.stderr}")
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        print(f"{what}: shellcheck not found, bash -n only")
        return
    r = subprocess.run([shellcheck, "--shell=bash", path], capture_output=True, text=True,
                       timeout=60)
    need(r.returncode == 0, f"{what}: shellcheck:\n{r.stdout}{r.stderr}")


def load_toml(path_or_text, what, text=False):
    try:
        import tomllib
    except ImportError:
        raise Skipped("tomllib needs Python 3.11")
    try:
        if text:
            return tomllib.loads(path_or_text)
        with open(path_or_text, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise Failed(f"{what}: {e}")


def containerd_loads(path, what):
    """`containerd config dump` of the file (containerd's own parser and defaults), or None
    when containerd is not installed."""
    containerd = shutil.which("containerd")
    if not containerd:
        print(f"{what}: containerd not found, parsed with tomllib only")
        return None
    r = subprocess.run([containerd, "--config", path, "config", "dump"], capture_output=True,
                       text=True, timeout=60)
    need(r.returncode == 0, f"{what}: containerd config dump: {r.stderr.strip()}")
    return load_toml(r.stdout, f"{what} (as containerd dumps it)", text=True)


def stargz_proxy_address(conf, what):
    """The socket of a containerd config's [proxy_plugins.stargz] (type snapshot)."""
    plugin = conf.get("proxy_plugins", {}).get("stargz")
    need(plugin, f"{what}: no [proxy_plugins.stargz]")
    need(plugin.get("type") == "snapshot", f"{what}: proxy_plugins.stargz type {plugin.get('type')!r}")
    need(plugin.get("address", "").startswith("/"), f"{what}: proxy_plugins.stargz address")
    return plugin["address"]


def flag_values(argv, name):
    """Values of a Go flag (-name V, -name=V, --name V, --name=V) in an argument list."""
    out = []
    for i, a in enumerate(argv):
        for dash in ("-", "--"):
            if a == dash + name and i + 1 < len(argv):
                out.append(argv[i + 1])
            elif a.startswith(dash + name + "="):
                out.append(a[len(dash + name) + 1:])
    return out


def env_file(path):
    """KEY=VALUE lines of a systemd EnvironmentFile (comments, quotes)."""
    out = {}
    for raw in read(path).splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        need("=" in line, f"{path}: bad line {raw!r}")
        k, v = line.split("=", 1)
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
            v = v[1:-1]
        out[k.strip()] = v
    return out


# --- systemd -----------------------------------------------------------------------------

def unit_directives(text):
    """[section] -> list of (key, value); continuation lines joined."""
    out, section, pending = {}, None, ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, [])
            continue
        need(section is not None and "=" in line, f"unit: bad line {raw!r}")
        k, v = line.split("=", 1)
        out[section].append((k.strip(), v.strip()))
    return out


# Where the Debian package (`make deb`, CMakeLists.txt) puts the binary, the docs and the
# secrets the unit hands to the daemon; the release tarball's copy of the unit says /usr/local.
PACKAGED_EXEC = "/usr/bin/layercached"
PACKAGED_DOCS = "file:///usr/share/doc/layercache/"
CREDENTIALS_DIR = "/etc/layercache/credentials/"
CREDENTIALS_RUN = "/run/credentials/layercached.service/"


def check_systemd(args):
    d = os.path.join(args.deploy_dir, "systemd")
    unit_path = os.path.join(d, "layercached.service")
    text = read(unit_path)
    units = unit_directives(text)
    svc = dict(units.get("Service", []))
    want = {
        "Type": "notify",  # layercached sends READY=1 once it listens (daemon/sd_notify.cpp)
        "ExecStart": PACKAGED_EXEC + " --config /etc/layercache/layercache.yaml",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "Restart": "on-failure",
        "User": "layercache",  # the package's system user (packaging/debian/postinst)
        "Group": "layercache",
        "StateDirectory": "layercache",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
    }
    for k, v in want.items():
        need(svc.get(k) == v, f"unit: {k}={svc.get(k)!r}, want {v!r}")
    need("DynamicUser" not in svc, "unit: DynamicUser would not be the package's user")
    families = set(svc.get("RestrictAddressFamilies", "").split())
    need(families and families <= {"AF_INET", "AF_INET6", "AF_UNIX"},
         f"unit: RestrictAddressFamilies={families}")
    need(dict(units.get("Install", [])).get("WantedBy") == "multi-user.target",
         "unit: WantedBy=multi-user.target missing")
    check_unit_documentation(args.deploy_dir, units)
    check_unit_credentials(args.deploy_dir, units, read(os.path.join(d, "layercache.yaml")))

    # The node config the unit names.
    check_config_file(args.layercached, os.path.join(d, "layercache.yaml"),
                      "deploy/systemd/layercache.yaml")
    cfg = read(os.path.join(d, "layercache.yaml"))
    need(re.search(r"^\s+- address: 127\.0\.0\.1:5000\b", cfg, re.M), "config: listen 127.0.0.1:5000")
    need(re.search(r"^\s+path: /var/lib/layercache\s*(#.*)?$", cfg, re.M), "config: cache path")
    need("url: https://registry-1.docker.io" in cfg and "default: true" in cfg,
         "config: Docker Hub default upstream")

    analyze = shutil.which("systemd-analyze")
    if not analyze:
        raise Skipped("systemd-analyze not found (structure and config checked)")
    # verify needs the ExecStart binary and config to exist: point them at the built ones.
    with tempfile.TemporaryDirectory() as tmp:
        exe = args.layercached
        cfg_copy = os.path.join(tmp, "layercache.yaml")
        shutil.copy(os.path.join(d, "layercache.yaml"), cfg_copy)
        t = text.replace(PACKAGED_EXEC, exe).replace(
            "/etc/layercache/layercache.yaml", cfg_copy)
        path = os.path.join(tmp, "layercached.service")
        with open(path, "w") as f:
            f.write(t)
        r = subprocess.run([analyze, "verify", "--man=no", path], capture_output=True,
                           text=True, timeout=60)
        out = (r.stdout + r.stderr).strip()
        print(out)
        # Lines about our unit are problems; other units' (e.g. docker.service named in
        # Before=, absent here) are not.
        ours = [l for l in out.splitlines() if "layercached.service" in l]
        need(r.returncode == 0 and not ours, f"systemd-analyze verify: rc {r.returncode}")


def check_unit_documentation(deploy_dir, units):
    """Documentation= names a file the package installs (docs/*.md, README.md)."""
    docs = [v for k, v in units.get("Unit", []) if k == "Documentation"]
    need(docs, "unit: no Documentation=")
    repo = os.path.join(deploy_dir, "..")
    for doc in " ".join(docs).split():
        need(doc.startswith(PACKAGED_DOCS), f"unit: Documentation={doc} is not under "
             f"{PACKAGED_DOCS} (the package's docs)")
        name = doc[len(PACKAGED_DOCS):]
        need(os.path.isfile(os.path.join(repo, "docs", name)) or name == "README.md",
             f"unit: Documentation={doc}: the package installs no {name}")


def check_unit_credentials(deploy_dir, units, config_text):
    """LoadCredential= pairs: from a file the package ships (empty, a conffile) in
    /etc/layercache/credentials/, so the unit starts without it being filled; every
    /run/credentials/layercached.service/<id> the unit's or the config's comments name is
    loaded."""
    loaded = {}
    for k, v in units.get("Service", []):
        if k == "LoadCredential":
            ident, _, source = v.partition(":")
            loaded[ident] = source
    need(loaded, "unit: no LoadCredential= (root-only secrets for the daemon)")
    repo = os.path.join(deploy_dir, "..")
    conffiles = read(os.path.join(repo, "packaging", "debian", "conffiles")).split()
    for ident, source in loaded.items():
        need(source.startswith(CREDENTIALS_DIR), f"LoadCredential={ident}:{source}: not in "
             f"{CREDENTIALS_DIR}")
        shipped = os.path.join(repo, "packaging", "credentials", source[len(CREDENTIALS_DIR):])
        need(os.path.isfile(shipped) and os.path.getsize(shipped) == 0,
             f"LoadCredential={ident}:{source}: packaging/credentials/ ships no empty file "
             "(a missing source stops the unit)")
        need(source in conffiles, f"{source} is not a conffile (an upgrade would clear it)")
    text = read(os.path.join(deploy_dir, "systemd", "layercached.service")) + config_text
    for ident in re.findall(re.escape(CREDENTIALS_RUN) + r"([\w.-]+)", text):
        need(ident in loaded, f"{CREDENTIALS_RUN}{ident} is named, but no LoadCredential= "
             f"loads {ident}")


# --- systemd: layercache-stargz ----------------------------------------------------------

STARGZ_UNIT = "layercache-stargz.service"
STARGZ_BINARY = "/usr/local/bin/layercache-stargz"
STARGZ_ENV = "/etc/layercache/stargz.env"
# Options that give the service a mount namespace of its own (or drop root): its FUSE mounts
# would then be invisible to containerd, which mounts overlays on them.
NAMESPACING = {"ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts",
               "PrivateNetwork", "PrivateUsers", "ProtectKernelTunables",
               "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
               "ProtectProc", "ProcSubset", "ReadOnlyPaths", "ReadWritePaths",
               "InaccessiblePaths", "ExecPaths", "NoExecPaths", "TemporaryFileSystem",
               "BindPaths", "BindReadOnlyPaths", "RootDirectory", "RootImage", "MountFlags",
               "MountAPIVFS", "DynamicUser", "User", "Group", "NetworkNamespacePath",
               "LogNamespace"}


def stargz_unit(deploy_dir):
    """The unit's directives and its ExecStart argv."""
    text = read(os.path.join(deploy_dir, "systemd", STARGZ_UNIT))
    units = unit_directives(text)
    svc = units.get("Service", [])
    execs = [v for k, v in svc if k == "ExecStart"]
    need(len(execs) == 1, f"{STARGZ_UNIT}: {len(execs)} ExecStart lines")
    return text, units, execs[0].split()


def check_systemd_stargz(args):
    d = os.path.join(args.deploy_dir, "systemd")
    text, units, argv = stargz_unit(args.deploy_dir)
    unit = units.get("Unit", [])
    svc_list = units.get("Service", [])
    svc = dict(svc_list)
    need(argv[0] == STARGZ_BINARY, f"ExecStart runs {argv[0]}, want {STARGZ_BINARY}")
    need(flag_values(argv, "root") == ["/var/lib/layercache-stargz"], "ExecStart: -root")
    address = flag_values(argv, "address")
    need(address == ["/run/layercache-stargz/stargz.sock"], f"ExecStart: -address {address}")
    need("$LAYERCACHE_STARGZ_FLAGS" in argv,
         "ExecStart does not pass $LAYERCACHE_STARGZ_FLAGS (unbraced: split into words)")
    want = {
        "Type": "notify",  # the daemon sends READY=1 once its socket listens
        "EnvironmentFile": STARGZ_ENV,
        "StateDirectory": "layercache-stargz",
        "RuntimeDirectory": "layercache-stargz",
        "NoNewPrivileges": "yes",
        "DevicePolicy": "closed",
        "DeviceAllow": "/dev/fuse rw",
        "KillMode": "mixed",
    }
    for k, v in want.items():
        need(svc.get(k) == v, f"{STARGZ_UNIT}: {k}={svc.get(k)!r}, want {v!r}")
    need(svc.get("Restart") in ("always", "on-failure"), f"Restart={svc.get('Restart')!r}")
    caps = set(svc.get("CapabilityBoundingSet", "").split())
    need("CAP_SYS_ADMIN" in caps, "CapabilityBoundingSet lacks CAP_SYS_ADMIN (mount)")
    need(not caps & {"CAP_NET_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_PTRACE", "CAP_SETUID"},
         f"CapabilityBoundingSet too wide: {sorted(caps)}")
    families = set(svc.get("RestrictAddressFamilies", "").split())
    need(families and families <= {"AF_INET", "AF_INET6", "AF_UNIX"},
         f"RestrictAddressFamilies={families}")
    namespacing = sorted({k for k, _ in svc_list} & NAMESPACING)
    need(not namespacing, f"{STARGZ_UNIT}: {namespacing} would hide the FUSE mounts from "
         "containerd (a mount namespace of the service's own) or drop root")
    need("UMask" not in svc or svc["UMask"] in ("0022", "022"),
         "UMask: snapshot directories become containers' root directories")
    order = lambda key: set(" ".join(v for k, v in unit if k == key).split())
    need("containerd.service" in order("Before"), "Before=containerd.service")
    need("layercached.service" in order("After"), "After=layercached.service")
    wanted_by = {v for k, v in units.get("Install", []) if k == "WantedBy"}
    need("multi-user.target" in wanted_by, "WantedBy=multi-user.target")

    # The flags file: LAYERCACHE_STARGZ_FLAGS with -mirror REGISTRY=http://127.0.0.1:5000, one
    # per registry the containerd hosts.toml files send through layercache.
    env = env_file(os.path.join(d, "layercache-stargz.env"))
    need(set(env) == {"LAYERCACHE_STARGZ_FLAGS"}, f"layercache-stargz.env sets {sorted(env)}")
    flags = env["LAYERCACHE_STARGZ_FLAGS"].split()
    mirrors = flag_values(flags, "mirror")
    need(mirrors, "layercache-stargz.env: no -mirror")
    registries = set()
    for m in mirrors:
        reg, _, url = m.partition("=")
        need(url == "http://127.0.0.1:5000", f"-mirror {m}: not layercache (http://127.0.0.1:5000)")
        registries.add(reg)
    hosts = set(os.listdir(os.path.join(args.deploy_dir, "containerd", "certs.d")))
    need(registries == hosts, f"-mirror registries {sorted(registries)} != the hosts.toml "
         f"registries {sorted(hosts)}")
    for f in flags:
        if f.startswith("-") and "=" not in f:
            need(f.lstrip("-") in STARGZ_FLAGS, f"layercache-stargz has no flag {f}")

    # The binary's own flags, when built: every one the unit and the file use exists.
    if args.stargz:
        r = subprocess.run([args.stargz, "-h"], capture_output=True, text=True, timeout=30)
        known = set(re.findall(r"^\s+-([a-z-]+)", r.stdout + r.stderr, re.M))
        used = {a.lstrip("-").split("=")[0] for a in argv[1:] + flags if a.startswith("-")}
        need(used <= known, f"flags the binary does not know: {sorted(used - known)}")

    analyze = shutil.which("systemd-analyze")
    if not analyze:
        raise Skipped("systemd-analyze not found (structure and flags checked)")
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.abspath(args.stargz) if args.stargz else None
        if not exe:  # not built here: any executable does for verify
            exe = os.path.join(tmp, "layercache-stargz")
            with open(exe, "w") as f:
                f.write("#!/bin/sh\n")
            os.chmod(exe, 0o755)
        envcopy = os.path.join(tmp, "stargz.env")
        shutil.copy(os.path.join(d, "layercache-stargz.env"), envcopy)
        path = os.path.join(tmp, STARGZ_UNIT)
        with open(path, "w") as f:
            f.write(text.replace(STARGZ_BINARY, exe).replace(STARGZ_ENV, envcopy))
        r = subprocess.run([analyze, "verify", "--man=no", path], capture_output=True,
                           text=True, timeout=60)
        out = (r.stdout + r.stderr).strip()
        print(out)
        ours = [l for l in out.splitlines() if STARGZ_UNIT in l]
        need(r.returncode == 0 and not ours, f"systemd-analyze verify: rc {r.returncode}")


# layercache-stargz's flags (snapshotter/main.go), for when the binary is not built.
STARGZ_FLAGS = {"root", "address", "log-level", "no-background-fetch", "no-prefetch",
                "request-timeout", "mirror", "insecure"}


# --- dockerd -----------------------------------------------------------------------------

def release_dockerd_dirs(tmp):
    """What a stopped dockerd may leave under its temp dir: the containerd it started, and
    mounts (it bind-mounts its data root), which removing the dir must not descend into."""
    try:
        with open(os.path.join(tmp, "exec", "containerd", "containerd.pid")) as f:
            pid = int(f.read().strip() or 0)
        if pid > 1:
            os.kill(pid, 15)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.1)
    except (OSError, ValueError):
        pass
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p == tmp or p.startswith(tmp + "/")),
                        key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)


def check_docker(args):
    path = os.path.join(args.deploy_dir, "docker", "daemon.json")
    conf = json.loads(read(path))
    need(conf.get("registry-mirrors") == ["http://127.0.0.1:5000"],
         f"daemon.json: registry-mirrors {conf.get('registry-mirrors')!r}")
    dockerd = shutil.which("dockerd") or shutil.which("/usr/sbin/dockerd")
    if not dockerd:
        print("dockerd not found: JSON and keys checked only")
        return
    helptext = subprocess.run([dockerd, "--help"], capture_output=True, text=True,
                              timeout=60).stdout
    if "--validate" in helptext:  # dockerd 23 and later
        r = subprocess.run([dockerd, "--validate", "--config-file", path], capture_output=True,
                           text=True, timeout=60)
        print(r.stdout + r.stderr)
        need(r.returncode == 0, "dockerd --validate failed")
        return
    if os.geteuid() != 0:
        print("dockerd before 23 has no --validate and needs root to load a config: "
              "JSON and keys checked only")
        return
    # dockerd 20.10: load the file for real. It refuses a bad config file before it listens;
    # a good one gets as far as serving its API socket (then it is stopped). Its own dirs,
    # no networking, a dead proxy: nothing outside the temp dir is touched.
    with tempfile.TemporaryDirectory(prefix="lc-dockerd-") as tmp:
        sock = os.path.join(tmp, "d.sock")
        dead = "http://127.0.0.1:9"
        env = dict(os.environ, HTTPS_PROXY=dead, HTTP_PROXY=dead, NO_PROXY="127.0.0.1")
        with open(os.path.join(tmp, "log"), "w") as log:
            proc = subprocess.Popen(
                [dockerd, "--config-file", path, "--data-root", os.path.join(tmp, "data"),
                 "--exec-root", os.path.join(tmp, "exec"), "--pidfile",
                 os.path.join(tmp, "pid"), "-H", "unix://" + sock, "--iptables=false",
                 "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
                 "--bridge=none", "--storage-driver=vfs"],
                stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                # Until it is fully up: stopped half-way, dockerd leaves its data root mounted.
                for _ in range(600):
                    if proc.poll() is not None or "API listen on" in read(log.name):
                        break
                    time.sleep(0.1)
                exited = proc.poll()
            finally:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                release_dockerd_dirs(tmp)
        output = read(os.path.join(tmp, "log"))
        need(exited is None and os.path.exists(sock) or "API listen on" in output,
             f"dockerd did not accept {path}:\n{output[-3000:]}")
        print(f"dockerd {subprocess.run([dockerd, '--version'], capture_output=True, text=True).stdout.strip()}"
              " loaded the file and served its API")


# --- containerd --------------------------------------------------------------------------

def check_containerd(args):
    try:
        import tomllib
    except ImportError:
        raise Skipped("tomllib needs Python 3.11")
    # (config-stargz.toml below, against deploy/systemd/layercache-stargz.service)
    d = os.path.join(args.deploy_dir, "containerd")
    hosts = {"docker.io": "https://registry-1.docker.io",
             "europe-docker.pkg.dev": "https://europe-docker.pkg.dev"}
    for reg, server in hosts.items():
        with open(os.path.join(d, "certs.d", reg, "hosts.toml"), "rb") as f:
            t = tomllib.load(f)
        need(t.get("server") == server, f"{reg}: server {t.get('server')!r}")
        host = t.get("host", {})
        need(list(host) == ["http://127.0.0.1:5000"], f"{reg}: hosts {list(host)}")
        need(host["http://127.0.0.1:5000"].get("capabilities") == ["pull", "resolve"],
             f"{reg}: capabilities")
    with open(os.path.join(d, "config.toml"), "rb") as f:
        c = tomllib.load(f)
    reg = c.get("plugins", {}).get("io.containerd.grpc.v1.cri", {}).get("registry", {})
    need(reg.get("config_path") == "/etc/containerd/certs.d", f"config.toml: {reg!r}")
    need(c.get("version") == 2, "config.toml: version = 2")
    containerd_loads(os.path.join(d, "config.toml"), "config.toml")

    # A lazy node's: the proxy plugin at the unit's socket, CRI's snapshotter stargz with the
    # snapshot labels on, the same hosts directory. As written and as containerd reads it.
    path = os.path.join(d, "config-stargz.toml")
    _, _, argv = stargz_unit(args.deploy_dir)
    for what, conf in (("config-stargz.toml", load_toml(path, "config-stargz.toml")),
                       ("config-stargz.toml", containerd_loads(path, "config-stargz.toml"))):
        if conf is None:
            continue
        need(conf.get("version") == 2, f"{what}: version = 2 (containerd 1.x)")
        address = stargz_proxy_address(conf, what)
        need([address] == flag_values(argv, "address"),
             f"{what}: proxy address {address} is not the unit's -address")
        cri = conf.get("plugins", {}).get("io.containerd.grpc.v1.cri", {})
        need(cri.get("containerd", {}).get("snapshotter") == "stargz",
             f"{what}: CRI snapshotter is not stargz")
        need(cri.get("containerd", {}).get("disable_snapshot_annotations") is False,
             f"{what}: disable_snapshot_annotations must be false (containerd 1.6 defaults to "
             "true: no labels, no lazy pull)")
        need(cri.get("registry", {}).get("config_path") == "/etc/containerd/certs.d",
             f"{what}: registry config_path")


# --- Kubernetes --------------------------------------------------------------------------

def configmap_text_without_yaml(text):
    """The `layercache.yaml: |` block scalar of the ConfigMap, by indentation."""
    lines = text.splitlines()
    for i, l in enumerate(lines):
        m = re.match(r"^(\s*)layercache\.yaml: \|\s*$", l)
        if not m:
            continue
        base = len(m.group(1))
        body, indent = [], None
        for l2 in lines[i + 1:]:
            if l2.strip() == "":
                body.append("")
                continue
            ind = len(l2) - len(l2.lstrip())
            if ind <= base:
                break
            indent = ind if indent is None else indent
            body.append(l2[indent:])
        return "\n".join(body).rstrip() + "\n"
    raise Failed("no `layercache.yaml: |` block in the ConfigMap")


def check_kubernetes_config(args):
    text = read(os.path.join(args.deploy_dir, "kubernetes", "layercache.yaml"))
    cfg = configmap_text_without_yaml(text)
    need("address: 127.0.0.1:5000" in cfg, "ConfigMap: registry listener not on loopback")
    with tempfile.TemporaryDirectory() as d:
        # token_file of the admin listener: the Secret's mount, replaced by a temp file.
        tok = os.path.join(d, "token")
        with open(tok, "w") as f:
            f.write("test-token\n")
        cfg = cfg.replace("/etc/layercache/admin/token", tok)
        check_config_text(args.layercached, cfg, "ConfigMap layercache.yaml")


def commented_block(text, first_line):
    """The commented-out YAML list starting at `# - name: <first_line>`, up to the first line
    that is not a comment, uncommented."""
    lines = text.splitlines()
    starts = [i for i, l in enumerate(lines) if re.match(r"^\s*# - name: " + first_line + r"\s*$", l)]
    need(len(starts) == 1, f"no commented `- name: {first_line}` (the opt-in node-setup init container)")
    block = []
    for l in lines[starts[0]:]:
        m = re.match(r"^(\s*)# ?(.*)$", l)
        if not m:
            break
        block.append(m.group(1) + m.group(2))
    return block


def node_setup_flags(layercached):
    """`layercachectl node setup`'s flags, from its usage text (the binary beside layercached)."""
    ctl = os.path.join(os.path.dirname(layercached or ""), "layercachectl")
    if not layercached or not os.access(ctl, os.X_OK):
        raise Skipped("no layercachectl beside --layercached to check the node-setup container")
    usage = subprocess.run([ctl, "--help"], capture_output=True, text=True, timeout=30).stdout
    section = usage.split("  node setup", 1)[1].split("\n  doctor", 1)[0]
    return set(re.findall(r"--[a-z][a-z-]*", section))


def check_node_setup_container(args, text, yaml, main, cfg):
    """The opt-in init container (commented out): its args are flags of `node setup`, its config
    and image are the main container's, its mounts are volumes (commented ones included), and
    the admin token_file the config names is mounted (node setup loads the config whole)."""
    init = yaml.safe_load("\n".join(commented_block(text, "node-setup")))[0]
    volumes = yaml.safe_load("\n".join(commented_block(text, "containerd-config")))
    argv = init["args"]
    need(init["command"] == ["layercachectl"] and argv[:2] == ["node", "setup"],
         f"node-setup: not `layercachectl node setup`: {init['command']} {argv}")
    flags = node_setup_flags(args.layercached)
    unknown = [a for a in argv[2:] if a.startswith("--") and a not in flags]
    need(not unknown, f"node-setup: not flags of `layercachectl node setup`: {unknown}")
    need("--containerd" in argv, "node-setup: without --containerd")
    mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    need(argv[argv.index("--config") + 1] == mounts.get("config"), "node-setup: --config != mount")
    need(init["image"] == main["image"], "node-setup: image differs from layercached's")
    names = {v["name"] for v in volumes} | {m["name"] for m in main["volumeMounts"]}
    need(set(mounts) <= names, f"node-setup: mounts without a volume: {set(mounts) - names}")
    tok_dir = os.path.dirname(cfg["admin"].get("token_file", ""))
    need(not tok_dir or tok_dir in mounts.values(),
         f"node-setup: the config's admin.token_file dir {tok_dir} is not mounted")
    hosts_dir = argv[argv.index("--containerd-hosts-dir") + 1]
    need(mounts.get("containerd-certs") == hosts_dir, "node-setup: hosts dir is not the mount")


def check_kubernetes(args):
    try:
        import yaml
    except ImportError:
        raise Skipped("PyYAML not found (kubernetes-config checks the ConfigMap)")
    d = os.path.join(args.deploy_dir, "kubernetes")
    docs = [x for x in yaml.safe_load_all(read(os.path.join(d, "layercache.yaml"))) if x]
    by_kind = {}
    for x in docs:
        need("apiVersion" in x and "kind" in x and "name" in x.get("metadata", {}),
             f"document without apiVersion/kind/metadata.name: {x}")
        by_kind[x["kind"]] = x
    need(set(by_kind) >= {"Namespace", "ConfigMap", "DaemonSet", "Service"}, f"kinds {set(by_kind)}")
    cm = by_kind["ConfigMap"]
    cfg = yaml.safe_load(cm["data"]["layercache.yaml"])
    need(cm["data"]["layercache.yaml"] == configmap_text_without_yaml(
        read(os.path.join(d, "layercache.yaml"))), "ConfigMap text extraction differs from PyYAML")
    need(cfg["server"]["listen"][0]["address"] == "127.0.0.1:5000", "registry listener")
    admin_port = int(cfg["admin"]["address"].rsplit(":", 1)[1])
    need(admin_port == 9401, "admin port 9401")

    ds = by_kind["DaemonSet"]
    need(ds["apiVersion"] == "apps/v1", "DaemonSet apiVersion")
    sel = ds["spec"]["selector"]["matchLabels"]
    pod = ds["spec"]["template"]
    need(all(pod["metadata"]["labels"].get(k) == v for k, v in sel.items()),
         "DaemonSet selector does not match the pod labels")
    ps = pod["spec"]
    need(ps.get("hostNetwork") is True, "hostNetwork: true")
    c = [c for c in ps["containers"] if c["name"] == "layercached"][0]
    need(":latest" not in c["image"] and ":" in c["image"], "image without a pinned tag")
    for kind in ("requests", "limits"):
        need({"cpu", "memory"} <= set(c["resources"].get(kind, {})), f"resources.{kind}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        g = c[probe]["httpGet"]
        need(g["path"] == path and g["port"] == admin_port, f"{probe}: {g}")
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in ps["volumes"]}
    need(set(mounts) <= set(vols), "volumeMount without a volume")
    need(mounts.get("store") == cfg["cache"]["path"], "store mount != cache.path")
    need(vols["store"]["hostPath"]["path"] == "/var/lib/layercache", "hostPath store")
    need(vols["config"]["configMap"]["name"] == cm["metadata"]["name"], "ConfigMap volume")
    args_ = c.get("args", [])
    # The ConfigMap as a directory (a subPath mount never updates) and reloaded on change.
    cfg_mount = [m for m in c["volumeMounts"] if m["name"] == "config"][0]
    need("subPath" not in cfg_mount, "the ConfigMap is mounted with subPath: it never updates")
    need(args_[:2] == ["--config", mounts["config"] + "/layercache.yaml"],
         "--config path is not the ConfigMap's file")
    need("--watch-config" in args_, "no --watch-config: a ConfigMap change is never loaded")
    tok_dir = os.path.dirname(cfg["admin"]["token_file"])
    need(mounts.get("admin-token") == tok_dir, "admin token_file not under the Secret mount")
    need(c["securityContext"].get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation")
    check_node_setup_container(args, read(os.path.join(d, "layercache.yaml")), yaml, c, cfg)

    svc = by_kind["Service"]
    need(svc["spec"]["selector"] == sel, "Service selector")
    port_names = {p["name"] for p in c["ports"]}
    need(all(p["targetPort"] in port_names for p in svc["spec"]["ports"]), "Service targetPort")
    need(docs[0]["kind"] == "Namespace", "the Namespace is not the first document")
    for x in docs:
        if x["kind"] not in ("Namespace", "PriorityClass"):  # PriorityClass: cluster-wide
            need(x["metadata"].get("namespace") == by_kind["Namespace"]["metadata"]["name"],
                 f"{x['kind']} namespace")
    # GKE admits the system-* priority classes only in kube-system.
    prio = ps.get("priorityClassName", "")
    need(not prio.startswith("system-"), f"priorityClassName {prio} outside kube-system")
    if prio:
        need(by_kind.get("PriorityClass", {}).get("metadata", {}).get("name") == prio,
             f"priorityClassName {prio} is not defined in layercache.yaml")
    header = read(os.path.join(d, "layercache.yaml")).split("apiVersion:", 1)[0]
    secret_at = header.find("create secret")
    need(0 <= header.find("create namespace") < secret_at,
         "the Secret command comes before the namespace exists")

    pm = yaml.safe_load(read(os.path.join(d, "podmonitor.yaml")))
    need(pm["apiVersion"] == "monitoring.coreos.com/v1" and pm["kind"] == "PodMonitor", "PodMonitor")
    need(pm["spec"]["selector"]["matchLabels"] == sel, "PodMonitor selector")
    ep = pm["spec"]["podMetricsEndpoints"][0]
    need(ep["port"] in port_names and ep["path"] == "/metrics", "PodMonitor endpoint")
    # The operator's job label is the value of the pod label jobLabel names; the alerts select
    # job="layercache".
    job_label = pm["spec"].get("jobLabel")
    need(job_label is not None and pod["metadata"]["labels"].get(job_label) == "layercache",
         "PodMonitor jobLabel must give job=\"layercache\" (the alerts' job)")
    alerts = read(os.path.join(args.deploy_dir, "prometheus", "alerts.yml"))
    need('job="layercache"' in alerts, "the alerts no longer select job=\"layercache\"")

    sc = yaml.safe_load(read(os.path.join(d, "prometheus-scrape.yaml")))
    job = sc["scrape_configs"][0]
    need(job["kubernetes_sd_configs"][0]["role"] == "pod", "scrape: role pod")
    promtool = shutil.which("promtool")
    if promtool:
        # Debian's Prometheus is built without Kubernetes service discovery: check the rest
        # of the job (relabelling, intervals) with a static target in its place.
        job = dict(job)
        del job["kubernetes_sd_configs"]
        job["static_configs"] = [{"targets": ["127.0.0.1:9401"]}]
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "scrape.yml")
            with open(path, "w") as f:
                json.dump({"scrape_configs": [job]}, f)  # JSON is YAML
            r = subprocess.run([promtool, "check", "config", path], capture_output=True,
                               text=True, timeout=60)
        print(r.stdout + r.stderr)
        need(r.returncode == 0, "promtool check config prometheus-scrape.yaml")
    else:
        print("promtool not found: scrape snippet parsed only")


# --- Dockerfile --------------------------------------------------------------------------

def check_dockerfile(args):
    text = read(os.path.join(args.deploy_dir, "Dockerfile"))
    # Join continuation lines, drop comments.
    logical, cur = [], ""
    for raw in text.splitlines():
        s = raw.strip()
        if not s or (s.startswith("#") and not cur):
            continue
        if s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        logical.append(cur + s)
        cur = ""
    need(not cur, "Dockerfile ends in a continuation")
    instr = [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if " " in l else "") for l in logical]
    froms = [a for i, a in instr if i == "FROM"]
    need(len(froms) >= 2, "not multi-stage")
    stages = []
    for a in froms:
        m = re.match(r"^(\S+)(?:\s+AS\s+(\S+))?$", a, re.I)
        need(m, f"FROM {a}")
        image, name = m.group(1), m.group(2)
        if image in stages:
            continue
        need(re.match(r"^debian:12(-slim)?$", image), f"FROM {image}: want debian:12[-slim] with a tag")
        stages.append(name)
    need(re.match(r"^debian:12-slim\b", froms[-1]), "runtime stage is not debian:12-slim")
    need("latest" not in " ".join(froms), "a `latest` tag")
    # Everything after the last FROM is the runtime stage.
    last = max(i for i, (k, _) in enumerate(instr) if k == "FROM")
    rt = instr[last + 1:]
    users = [a for k, a in rt if k == "USER"]
    need(users and users[-1].split(":")[0] not in ("root", "0"), "runtime stage runs as root")
    expose = set(" ".join(a for k, a in rt if k == "EXPOSE").split())
    need({"5000", "9401"} <= expose, f"EXPOSE {expose}")
    ep = [a for k, a in rt if k == "ENTRYPOINT"]
    need(ep and json.loads(ep[-1])[0] == "/usr/local/bin/layercached", "ENTRYPOINT")
    copies = [a for k, a in rt if k == "COPY" and a.startswith("--from=")]
    need(any("layercached" in a for a in copies) and any("layercachectl" in a for a in copies),
         "runtime stage does not copy layercached and layercachectl from the build stage")
    build = instr[:last]
    runs = " ".join(a for k, a in build if k == "RUN")
    need("cmake" in runs and "Ninja" in runs and "layercached" in runs and "layercachectl" in runs,
         "build stage does not build both targets with cmake/ninja")
    # Build deps: a subset of the Makefile's RUN_PACKAGES (what `make run` builds with: the
    # tests off, as here).
    mk = read(os.path.join(args.deploy_dir, "..", "Makefile"))
    m = re.search(r"^RUN_PACKAGES\s*:?=((?:.*\\\n)*.*)$", mk, re.M)
    need(m, "Makefile: no RUN_PACKAGES")
    deb = set(m.group(1).replace("\\", " ").split())
    inst = re.search(r"apt-get install\s+(.*?)(?:&&|$)", runs)
    pkgs = {p for p in inst.group(1).split() if not p.startswith("-")}
    need(pkgs <= deb, f"build packages not in RUN_PACKAGES: {sorted(pkgs - deb)}")
    need("-DLAYERCACHE_TESTS=OFF" in runs, "the image's build compiles the tests")
    # COPY sources of the runtime stage (other than --from) exist in the repository.
    for k, a in rt:
        if k == "COPY" and not a.startswith("--from="):
            for src in a.split()[:-1]:
                need(os.path.exists(os.path.join(args.deploy_dir, "..", src)), f"COPY {src}: missing")


# --- Cloud Batch -------------------------------------------------------------------------

def check_batch(args):
    d = os.path.join(args.deploy_dir, "batch")
    job = json.loads(read(os.path.join(d, "job.json")))
    need(set(job) <= {"taskGroups", "allocationPolicy", "labels", "logsPolicy", "priority"},
         f"unknown top-level keys {set(job)}")
    need(job["logsPolicy"]["destination"] == "CLOUD_LOGGING", "logsPolicy")
    tg = job["taskGroups"]
    need(len(tg) == 1, "one task group")
    spec = tg[0]["taskSpec"]
    runs = spec["runnables"]
    need(len(runs) >= 2, "two runnables")
    first, second = runs[0], runs[-1]
    script = first["script"]["text"]
    need(script == read(os.path.join(d, "start-layercache.sh")),
         "runnables[0].script.text differs from deploy/batch/start-layercache.sh")
    check_script(os.path.join(d, "start-layercache.sh"), "start-layercache.sh")
    need(not first.get("background"), "the first runnable must finish before the container")
    img = second["container"]["imageUri"]
    need(re.match(r"^127\.0\.0\.1:5000/[a-z0-9-]+-docker\.pkg\.dev/", img),
         f"imageUri {img} not pulled through the mirror from Artifact Registry")
    ar_host = img.split("/")[1]
    for k in ("cpuMilli", "memoryMib"):
        need(k in spec.get("computeResource", {}), f"computeResource.{k}")
    ap = job["allocationPolicy"]
    need("@" in ap["serviceAccount"]["email"], "allocationPolicy.serviceAccount.email")
    inst = ap["instances"]
    need(inst and all(("policy" in i) != ("instanceTemplate" in i) for i in inst),
         "allocationPolicy.instances: policy or instanceTemplate")
    check_batch_boot_disk(inst)
    check_batch_package(args, script)
    # The embedded layercache config.
    m = re.search(r"<<'LAYERCACHE_YAML'\n(.*?)\nLAYERCACHE_YAML\n", script, re.S)
    need(m, "no LAYERCACHE_YAML heredoc in the startup script")
    cfg = m.group(1) + "\n"
    need(re.search(r"- name: " + re.escape(ar_host) + r"\n\s+url: https://" + re.escape(ar_host)
                   + r"\n\s+auth:\n\s+type: gce_metadata", cfg),
         f"config: no gce_metadata upstream for {ar_host}")
    need("address: 127.0.0.1:5000" in cfg, "config: listener 127.0.0.1:5000")
    need('"http://127.0.0.1:5000"' in script and "/etc/docker/daemon.json" in script,
         "startup script does not configure dockerd's registry-mirrors")
    need("/readyz" in script, "startup script does not wait for /readyz")
    check_config_text(args.layercached, cfg, "Batch startup script's layercache.yaml")


# The fields of google.cloud.batch.v1 AllocationPolicy.InstancePolicy and AllocationPolicy.Disk
# (googleapis google/cloud/batch/v1/job.proto), as JSON names: a misspelt key is dropped by the
# API without an error, so the job would boot whatever image Batch picks.
BATCH_INSTANCE_POLICY_FIELDS = {"machineType", "minCpuPlatform", "provisioningModel",
                                "accelerators", "bootDisk", "disks", "reservation"}
BATCH_DISK_FIELDS = {"image", "snapshot", "type", "sizeGb", "diskInterface"}
# Debian 12 from Compute Engine's public images: apt and Debian 12's libraries, which the
# package depends on (Container-Optimized OS, Batch's default for some jobs, has no apt).
BATCH_BOOT_IMAGE = "projects/debian-cloud/global/images/family/debian-12"


def check_batch_boot_disk(instances):
    for i in instances:
        policy = i.get("policy")
        if policy is None:
            print("instanceTemplate: its boot image is the template's")
            continue
        need(set(policy) <= BATCH_INSTANCE_POLICY_FIELDS,
             f"instances[].policy: unknown fields {sorted(set(policy) - BATCH_INSTANCE_POLICY_FIELDS)}")
        disk = policy.get("bootDisk", {})
        need(set(disk) <= BATCH_DISK_FIELDS,
             f"bootDisk: unknown fields {sorted(set(disk) - BATCH_DISK_FIELDS)}")
        need(disk.get("image") == BATCH_BOOT_IMAGE,
             f"bootDisk.image {disk.get('image')!r}, want {BATCH_BOOT_IMAGE} (pinned Debian 12)")
        need(int(disk.get("sizeGb", "0")) >= 30, "bootDisk.sizeGb: room for the cache")


def check_batch_package(args, script):
    """start-layercache.sh installs `make deb`'s package with apt (which installs its
    Depends) and runs the packaged unit."""
    # The default (the environment may name a local file instead: scripts/clean-install.sh).
    m = re.search(r"^LAYERCACHE_DEB=\$\{LAYERCACHE_DEB:-gs://\S+/(layercache_([0-9.]+)_([a-z0-9]+)"
                  r"\.deb)\}$", script, re.M)
    need(m, "start-layercache.sh names no LAYERCACHE_DEB=${LAYERCACHE_DEB:-gs://…/"
         "layercache_<version>_<arch>.deb}")
    if args.layercached:
        version = subprocess.run([args.layercached, "--version"], capture_output=True,
                                 text=True, timeout=30).stdout.split()[-1]
        need(m.group(2) == version, f"LAYERCACHE_DEB {m.group(1)}: layercached is {version}")
    need(re.search(r'apt-get install -y [^\n]*"\$\{missing\[@\]\}"', script) and
         "missing+=(/tmp/layercache.deb)" in script,
         "start-layercache.sh does not install the .deb with apt-get (its Depends)")
    need("systemctl restart layercached.service" in script and "systemd-run" not in script,
         "start-layercache.sh does not run the packaged unit")


def heredoc(script, tag, what):
    m = re.search(r"<<'" + tag + r"'\n(.*?)\n" + tag + r"\n", script, re.S)
    need(m, f"{what}: no {tag} heredoc")
    return m.group(1) + "\n"


def check_batch_lazy(args):
    """deploy/batch/job-lazy.json: a lazy node (start-lazy-node.sh) and the task's container
    pulled lazily through containerd + layercache-stargz + layercache (run-lazy.sh)."""
    d = os.path.join(args.deploy_dir, "batch")
    job = json.loads(read(os.path.join(d, "job-lazy.json")))
    plain = json.loads(read(os.path.join(d, "job.json")))
    need(set(job) <= {"taskGroups", "allocationPolicy", "labels", "logsPolicy", "priority"},
         f"unknown top-level keys {set(job)}")
    need(job["logsPolicy"]["destination"] == "CLOUD_LOGGING", "logsPolicy")
    need(job["allocationPolicy"] == plain["allocationPolicy"],
         "allocationPolicy differs from job.json's (same VMs, same service account)")
    tg = job["taskGroups"]
    need(len(tg) == 1, "one task group")
    spec = tg[0]["taskSpec"]
    for k in ("cpuMilli", "memoryMib"):
        need(k in spec.get("computeResource", {}), f"computeResource.{k}")
    runs = spec["runnables"]
    need(len(runs) == 2, "two runnables: the lazy node, then the task")
    need(all("script" in r and "container" not in r for r in runs),
         "script runnables only (a container runnable runs through dockerd: no lazy pull)")
    need(not any(r.get("background") for r in runs), "no background runnable")
    for r, name in zip(runs, ("start-lazy-node.sh", "run-lazy.sh")):
        need(r["script"]["text"] == read(os.path.join(d, name)),
             f"script.text of runnable {r.get('displayName')!r} differs from deploy/batch/{name}")
        check_script(os.path.join(d, name), name)
    setup = runs[0]["script"]["text"]
    task = runs[1]["script"]["text"]

    # The task: IMAGE through layercache from Artifact Registry, and a COMMAND, in the task's
    # environment (both runnables: the first preloads the start of IMAGE).
    env = spec.get("environment", {}).get("variables", {})
    need({"IMAGE", "COMMAND"} <= set(env), f"taskSpec environment: {sorted(env)}")
    need(re.search(r'layercachectl preload --start "\$\{IMAGE#127\.0\.0\.1:5000/\}"', setup),
         "start-lazy-node.sh does not preload the start of IMAGE")
    img = env["IMAGE"]
    need(re.match(r"^127\.0\.0\.1:5000/[a-z0-9-]+-docker\.pkg\.dev/", img),
         f"IMAGE {img} not named through layercache from Artifact Registry")
    ar_host = img.split("/")[1]
    need("ctr-remote" in task and "rpull --plain-http" in task, "run-lazy.sh: no ctr-remote rpull")
    need("--snapshotter stargz" in task, "run-lazy.sh: ctr run without --snapshotter stargz")

    # The layercache config.
    cfg = heredoc(setup, "LAYERCACHE_YAML", "start-lazy-node.sh")
    need(re.search(r"- name: " + re.escape(ar_host) + r"\n\s+url: https://" + re.escape(ar_host)
                   + r"\n\s+auth:\n\s+type: gce_metadata", cfg),
         f"config: no gce_metadata upstream for {ar_host}")
    need("address: 127.0.0.1:5000" in cfg, "config: listener 127.0.0.1:5000")
    need(re.search(r"^mode: lazy$", cfg, re.M) and
         not re.search(r"^\s+(chunk_size|complete_partial|eager_layers|quiet):", cfg, re.M),
         "config: not the lazy-node settings (mode: lazy, none of its keys overridden)")
    need("/readyz" in setup, "start-lazy-node.sh does not wait for /readyz")

    # The snapshotter: the unit the tarball ships, its flags file written.
    need("/usr/local/share/layercache/systemd/" + STARGZ_UNIT in setup,
         "start-lazy-node.sh does not install the shipped unit")
    need(STARGZ_ENV in setup, f"start-lazy-node.sh does not write {STARGZ_ENV}")
    flags_file = heredoc(setup, "STARGZ_ENV", "start-lazy-node.sh")
    _, _, argv = stargz_unit(args.deploy_dir)
    socket = flag_values(argv, "address")[0]
    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "stargz.env")
        with open(p, "w") as f:
            f.write(flags_file)
        flags = env_file(p)
    for m in flag_values(flags.get("LAYERCACHE_STARGZ_FLAGS", "").split(), "mirror"):
        need(m.endswith("=http://127.0.0.1:5000"), f"-mirror {m}: not layercache")

    # containerd: its own instance with the stargz proxy plugin at the unit's socket.
    conf_text = heredoc(setup, "CONTAINERD_TOML", "start-lazy-node.sh")
    conf = load_toml(conf_text, "start-lazy-node.sh containerd config", text=True)
    need(stargz_proxy_address(conf, "containerd config") == socket,
         f"containerd's proxy plugin address is not the unit's -address {socket}")
    need(re.search(r"^STARGZ_SOCKET=" + re.escape(socket) + "$", setup, re.M),
         "STARGZ_SOCKET is not the unit's -address")
    grpc_address = conf.get("grpc", {}).get("address", "")
    need(grpc_address and grpc_address != "/run/containerd/containerd.sock",
         "the lazy node's containerd must not take the VM's containerd socket")
    need(conf.get("root") and conf["root"] != "/var/lib/containerd", "containerd root")
    for script, what in ((setup, "start-lazy-node.sh"), (task, "run-lazy.sh")):
        m = re.search(r"^(?:CONTAINERD_SOCKET|ADDRESS)=(?:\$\{\w+:-)?([^\s}]+)\}?$", script,
                      re.M)
        need(m and m.group(1) == grpc_address, f"{what}: containerd socket != {grpc_address}")
    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "containerd.toml")
        with open(p, "w") as f:
            f.write(conf_text)
        dumped = containerd_loads(p, "start-lazy-node.sh containerd config")
        if dumped is not None:
            stargz_proxy_address(dumped, "containerd config (dumped)")
            need("io.containerd.grpc.v1.cri" in dumped.get("disabled_plugins", []),
                 "the lazy node's containerd runs a CRI plugin")
    check_config_text(args.layercached, cfg, "start-lazy-node.sh's layercache.yaml")


# Packages every Debian 12 host has (Essential or required by them).
BASE_PACKAGES = {"libc6", "libstdc++6", "libgcc-s1"}


def check_release(args):
    """`make dist`'s tarball is what deploy/batch/start-layercache.sh unpacks into /usr/local:
    its name, layout and version, and every shared library its binaries need directly comes
    from a package the script installs (or from the base system)."""
    for tool in ("cpack", "readelf", "ldd", "dpkg", "tar"):
        if not shutil.which(tool):
            raise Skipped(f"{tool} not found")
    need(args.build_dir and os.path.exists(os.path.join(args.build_dir, "CPackConfig.cmake")),
         "--build-dir must be a configured build tree")
    # The lazy node's script unpacks it (start-layercache.sh installs the .deb instead).
    script = read(os.path.join(args.deploy_dir, "batch", "start-lazy-node.sh"))
    m = re.search(r"^LAYERCACHE_TARBALL=\S+/(layercache-[^/\s]+\.tar\.gz)$", script, re.M)
    need(m, "start-lazy-node.sh names no LAYERCACHE_TARBALL")
    wanted = m.group(1)
    m = re.search(r"apt-get install -y[^\n]*?((?:[^\n]*\\\n)*[^\n]*)\n", script.split(
        "if ! command -v layercached", 1)[1])
    need(m, "the Batch script installs no runtime libraries")
    listed = set(re.findall(r"\b(lib[a-z0-9.+-]+)", m.group(0)))
    with tempfile.TemporaryDirectory(prefix="layercache-dist-") as tmp:
        r = subprocess.run(["cpack", "-G", "TGZ", "-B", tmp, "--config",
                            os.path.join(args.build_dir, "CPackConfig.cmake")],
                           capture_output=True, text=True, timeout=300)
        need(r.returncode == 0, f"cpack failed:\n{r.stdout}{r.stderr}")
        tarballs = [f for f in os.listdir(tmp) if f.endswith(".tar.gz")]
        need(len(tarballs) == 1, f"cpack made {tarballs}")
        name = tarballs[0]
        version = re.match(r"layercache-([0-9.]+)-linux-([a-z0-9_]+)\.tar\.gz$", name)
        need(version, f"tarball name {name}")
        arch = version.group(2)
        if arch in ("amd64",):
            need(name == wanted, f"cpack made {name}, the Batch script downloads {wanted}")
        root = os.path.join(tmp, "root")
        os.mkdir(root)
        r = subprocess.run(["tar", "-xzf", os.path.join(tmp, name), "-C", root],
                           capture_output=True, text=True, timeout=60)
        need(r.returncode == 0, f"tar: {r.stderr}")
        for entry in os.listdir(root):
            need(entry in ("bin", "share"), f"tarball has a top-level {entry}: it would land "
                 "in /usr/local/" + entry)
        # The unit for a /usr/local install: the packaged one with /usr/local paths, and the
        # docs its Documentation= names.
        unit = read(os.path.join(args.deploy_dir, "systemd", "layercached.service"))
        local_unit = unit.replace("=" + PACKAGED_EXEC, "=/usr/local/bin/layercached").replace(
            PACKAGED_DOCS, "file:///usr/local/share/doc/layercache/")
        need(local_unit != unit and read(os.path.join(
            root, "share", "layercache", "systemd", "layercached.service")) == local_unit,
             "the tarball's layercached.service is not deploy/systemd's with /usr/local paths")
        for doc in re.findall(r"^Documentation=file:///usr/local/(\S+)$", local_unit, re.M):
            need(os.path.isfile(os.path.join(root, doc)), f"the tarball has no {doc}")
        # layercache-stargz (start-lazy-node.sh, the unit) when this build made it: Go,
        # static (no shared library to install), with its unit and flags file.
        stargz = os.path.join(root, "bin", "layercache-stargz")
        if args.stargz:
            need(os.access(stargz, os.X_OK), "bin/layercache-stargz missing (it was built)")
            r = subprocess.run([stargz, "-h"], capture_output=True, text=True, timeout=30)
            need(r.returncode == 0 and "-mirror" in r.stderr, f"bin/layercache-stargz -h: {r.stderr}")
            r = subprocess.run(["readelf", "-d", stargz], capture_output=True, text=True,
                               timeout=30)
            need("(NEEDED)" not in r.stdout, "bin/layercache-stargz needs shared libraries")
            for f in ("systemd/layercache-stargz.service", "systemd/layercache-stargz.env",
                      "containerd/config-stargz.toml"):
                need(os.path.exists(os.path.join(root, "share", "layercache", f)),
                     f"share/layercache/{f} missing")
            need(read(os.path.join(root, "share", "layercache", "systemd", STARGZ_UNIT)) ==
                 read(os.path.join(args.deploy_dir, "systemd", STARGZ_UNIT)),
                 "the tarball's layercache-stargz.service differs from deploy/systemd's")
        else:
            need(not os.path.exists(stargz), "bin/layercache-stargz in the tarball, not built?")
            print("layercache-stargz not built here: not in the tarball")
        for binary in ("layercached", "layercachectl"):
            path = os.path.join(root, "bin", binary)
            need(os.access(path, os.X_OK), f"bin/{binary} missing or not executable")
            if binary == "layercached":
                r = subprocess.run([path, "--version"], capture_output=True, text=True,
                                   timeout=30)
                need(r.returncode == 0 and r.stdout.split() == ["layercached",
                                                                 version.group(1)],
                     f"bin/layercached --version: {r.stdout}{r.stderr}")
            needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                                subprocess.run(["readelf", "-d", path], capture_output=True,
                                               text=True, timeout=30).stdout)
            need(needed, f"bin/{binary}: no NEEDED entries (readelf)")
            resolved = {}
            for line in subprocess.run(["ldd", path], capture_output=True, text=True,
                                       timeout=30).stdout.splitlines():
                parts = line.split("=>")
                if len(parts) == 2:
                    target = parts[1].split("(")[0].strip()
                    resolved[parts[0].strip()] = target
            for soname in needed:
                lib = resolved.get(soname)
                need(lib and lib != "not found", f"bin/{binary}: {soname} not found by ldd")
                r = subprocess.run(["dpkg", "-S", lib], capture_output=True, text=True,
                                   timeout=30)
                if r.returncode != 0:  # /lib is a symlink to /usr/lib on Debian 12
                    r = subprocess.run(["dpkg", "-S", os.path.realpath(lib)],
                                       capture_output=True, text=True, timeout=30)
                need(r.returncode == 0, f"{lib}: no package owns it")
                pkg = r.stdout.split(":")[0].strip()
                need(pkg in BASE_PACKAGES or pkg in listed,
                     f"bin/{binary} needs {soname} from {pkg}, which the Batch script does not "
                     f"install (it installs {sorted(listed)})")
        print(f"{name}: {sorted(os.listdir(os.path.join(root, 'bin')))}, libraries covered")


def check_tier(args):
    """deploy/tier: a tier member and a node in front of it (issue 21). Both configs pass
    --check-config (the token file replaced by a temp one); the node's mirrors are the tier's
    members, hashed, with their own auth, and every upstream of the node is one the tier serves
    by the same host (a node's request carries ns=<upstream host>)."""
    tier_dir = os.path.join(args.deploy_dir, "tier")
    for name in ("README.md", "tier.yaml", "node.yaml"):
        need(os.path.exists(os.path.join(tier_dir, name)), f"deploy/tier/{name} is missing")
    try:
        import yaml
    except ImportError:
        raise Skipped("PyYAML not found (deploy/tier's configs are read with it)")
    tier_text = read(os.path.join(tier_dir, "tier.yaml"))
    node_text = read(os.path.join(tier_dir, "node.yaml"))
    tier = yaml.safe_load(tier_text)
    node = yaml.safe_load(node_text)
    need(tier["server"].get("client_auth", {}).get("token_file"),
         "tier.yaml: a tier beyond loopback needs client_auth")
    tier_hosts = set()
    for u in tier["upstreams"]:
        tier_hosts.add(re.sub(r"^https?://", "", u["url"]).split("/")[0])
        tier_hosts.update(u.get("aliases", []))
    token = tier["server"]["client_auth"]["token_file"]
    for u in node["upstreams"]:
        host = re.sub(r"^https?://", "", u["url"]).split("/")[0]
        need(host in tier_hosts, f"node.yaml: upstream {u['name']} ({host}) is not one the tier serves")
        need(u.get("mirror_select") == "hash", f"node.yaml: {u['name']}: mirror_select is not hash")
        need(u.get("mirrors"), f"node.yaml: {u['name']} has no mirrors")
        for m in u["mirrors"]:
            need(m.get("auth", {}).get("password_file") == token,
                 f"node.yaml: {u['name']}: mirror {m['url']} does not present the tier's token")
    with tempfile.TemporaryDirectory() as d:
        tok = os.path.join(d, "token")
        with open(tok, "w") as f:
            f.write("test-token\n")
        check_config_text(args.layercached, tier_text.replace(token, tok), "deploy/tier/tier.yaml")
        check_config_text(args.layercached, node_text.replace(token, tok), "deploy/tier/node.yaml")


def check_shared_node(args):
    """deploy/shared-node: a node shared by teams (issue 23). The config passes --check-config;
    every upstream is access: client with no node credentials (fills go with each client's
    own) and no server.client_auth; each hosts.toml puts layercache first as a pull/resolve
    mirror and the registry itself as server (where pulls whose credentials containerd keeps
    from mirrors go), for a registry the config serves by that host; daemon.json names
    layercache as the mirror."""
    d = os.path.join(args.deploy_dir, "shared-node")
    for name in ("README.md", "layercache.yaml", "daemon.json"):
        need(os.path.exists(os.path.join(d, name)), f"deploy/shared-node/{name} is missing")
    try:
        import yaml
    except ImportError:
        raise Skipped("PyYAML not found (deploy/shared-node's config is read with it)")
    text = read(os.path.join(d, "layercache.yaml"))
    cfg = yaml.safe_load(text)
    need("client_auth" not in cfg.get("server", {}),
         "layercache.yaml: client_auth cannot go with access: client")
    listen = cfg["server"]["listen"][0]["address"]
    served = set()
    for u in cfg["upstreams"]:
        need(u.get("access") == "client", f"layercache.yaml: {u['name']} is not access: client")
        need("auth" not in u, f"layercache.yaml: {u['name']} has node credentials")
        served.add(re.sub(r"^https?://", "", u["url"]).split("/")[0])
        served.update(u.get("aliases", []))
    certs = os.path.join(d, "certs.d")
    registries = sorted(os.listdir(certs))
    need(registries, "deploy/shared-node/certs.d has no registry")
    for reg in registries:
        t = load_toml(os.path.join(certs, reg, "hosts.toml"), f"certs.d/{reg}/hosts.toml")
        need(reg in served, f"certs.d/{reg}: no upstream of layercache.yaml serves {reg}")
        need(t.get("server") == f"https://{reg}", f"certs.d/{reg}: server {t.get('server')!r}")
        hosts = t.get("host", {})
        need(list(hosts) == [f"http://{listen}"], f"certs.d/{reg}: hosts {list(hosts)}")
        need(hosts[f"http://{listen}"].get("capabilities") == ["pull", "resolve"],
             f"certs.d/{reg}: capabilities")
    daemon = json.loads(read(os.path.join(d, "daemon.json")))
    need(daemon.get("registry-mirrors") == [f"http://{listen}"],
         f"daemon.json: registry-mirrors {daemon.get('registry-mirrors')!r}")
    check_config_text(args.layercached, text, "deploy/shared-node/layercache.yaml")


CHECKS = {
    "tier": check_tier,
    "shared-node": check_shared_node,
    "systemd": check_systemd,
    "systemd-stargz": check_systemd_stargz,
    "docker": check_docker,
    "containerd": check_containerd,
    "kubernetes": check_kubernetes,
    "kubernetes-config": check_kubernetes_config,
    "dockerfile": check_dockerfile,
    "batch": check_batch,
    "batch-lazy": check_batch_lazy,
    "release": check_release,
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--deploy-dir", required=True)
    p.add_argument("--layercached")
    p.add_argument("--build-dir")
    p.add_argument("--stargz", help="the built layercache-stargz, if the build made one")
    p.add_argument("check", choices=sorted(CHECKS))
    args = p.parse_args()
    if args.layercached and not os.access(args.layercached, os.X_OK):
        print(f"{args.layercached}: not executable", file=sys.stderr)
        return 1
    if args.stargz and not os.access(args.stargz, os.X_OK):
        print(f"{args.stargz}: not executable (build the layercache_stargz target)",
              file=sys.stderr)
        return 1
    try:
        CHECKS[args.check](args)
    except Skipped as e:
        print(f"SKIP: {e}")
        return SKIP
    except (Failed, KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"{args.check}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
