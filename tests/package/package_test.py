#!/usr/bin/env python3
"""The Debian package for real (ctest -L package): make it, install it, run it, purge it.

  package_test.py --build-dir BUILD --source-dir SRC --seed BUILD/layercache-seed

1. `cpack -G DEB` in a temporary directory (as `make deb`): the name
   layercache_<version>_<arch>.deb, its control fields, Depends covering every shared library
   the binaries need, the conffiles, the maintainer scripts (sh -n, shellcheck where installed).
2. `apt-get install ./layercache_*.deb`: the files, the conffiles, the `layercache` system user
   owning /var/lib/layercache, the unit (every path it names exists; systemd-analyze verify
   where installed), postinst run again changes nothing.
3. The INSTALLED /usr/bin/layercached as the `layercache` user, on the packaged config with
   free loopback ports, a temporary store and a local docker-registry as its upstream (no
   systemd runs here: PID 1 is not systemd), $NOTIFY_SOCKET bound by this test: READY=1, a
   skopeo pull through it with every digest checked, /usr/bin/layercachectl stats, SIGTERM
   (STOPPING=1, exit 0).
4. `apt-get purge layercache`: the files, the state, the user and group and the unit's
   enablement are gone.

The machine is left as it was found: exit 77 (ctest SKIP_RETURN_CODE) when not root, without
apt-get, or when a layercache package, user, group, /etc/layercache or /var/lib/layercache is
already there (the purge would take someone's install with it); what a run cut short installed
(MARKER) is purged by the next. A tool the test needs that is
missing otherwise (dpkg-shlibdeps from dpkg-dev, skopeo, docker-registry) fails it.
"""

import argparse
import contextlib
import fcntl
import functools
import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request

SKIP = 77
UNIT = "/lib/systemd/system/layercached.service"
CONFFILES = {"/etc/layercache/layercache.yaml", "/etc/layercache/credentials/registry-password",
             "/etc/layercache/credentials/docker-config.json"}
DOCS = ("README.md", "operations.md", "configuration.md", "architecture.md", "copyright")
# What purge must leave no trace of (the unit's enablement as deb-systemd-helper records it too).
PURGED = ("/usr/bin/layercached", "/usr/bin/layercachectl", UNIT, "/etc/layercache",
          "/usr/share/doc/layercache", "/var/lib/layercache",
          "/etc/systemd/system/multi-user.target.wants/layercached.service",
          "/etc/systemd/system/layercached.service",
          "/var/lib/systemd/deb-systemd-helper-enabled/layercached.service.dsh-also",
          "/var/lib/systemd/deb-systemd-helper-masked/layercached.service")


class Failed(Exception):
    pass


class Skipped(Exception):
    pass


def need(cond, msg):
    if not cond:
        raise Failed(msg)


def run(argv, timeout=120, check=True, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise Failed(f"{' '.join(argv)}: exit {r.returncode}\n{r.stdout}{r.stderr}")
    return r


STARTED = time.monotonic()


def step(name):
    print(f"[{time.monotonic() - STARTED:5.1f} s] {name}", flush=True)


def read(path):
    with open(path) as f:
        return f.read()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def package_state():
    """dpkg's status of layercache ('' when dpkg has no record of it)."""
    r = run(["dpkg-query", "-W", "-f=${Status}", "layercache"], check=False)
    return r.stdout.strip() if r.returncode == 0 else ""


# Present from just before this test installs the package until it has purged it: a run cut
# short (SIGKILL at ctest's timeout) is recognised, and its install purged, by the next run.
MARKER = "/var/lib/layercache-package-test.installed"


def can_install():
    if os.geteuid() != 0:
        raise Skipped("not root: installing a package needs root")
    for tool in ("apt-get", "dpkg", "dpkg-deb", "dpkg-query"):
        if not shutil.which(tool):
            raise Skipped(f"no {tool}: not a Debian system")


def recover_interrupted_run():
    if not os.path.exists(MARKER):
        return
    print(f"{MARKER}: an earlier run was cut short; purging what it installed", flush=True)
    if package_state():
        apt_get("purge", "layercache")
    os.unlink(MARKER)


def preconditions():
    state = package_state()
    if state and not state.endswith("not-installed"):
        raise Skipped(f"a layercache package is here already ({state}): not touching it")
    for what, gone in (("user", lambda: pwd.getpwnam("layercache")),
                       ("group", lambda: grp.getgrnam("layercache"))):
        with contextlib.suppress(KeyError):
            gone()
            raise Skipped(f"a `layercache` {what} exists already: purge would remove it")
    for path in ("/etc/layercache", "/var/lib/layercache"):
        if os.path.lexists(path):
            raise Skipped(f"{path} exists already: purge would remove it")
    for tool in ("cpack", "dpkg-shlibdeps", "skopeo", "docker-registry", "readelf", "ldd"):
        need(shutil.which(tool), f"{tool} not found (make test installs it: Makefile "
             "TEST_PACKAGES)")


@contextlib.contextmanager
def machine_lock(timeout=240):
    """One package test at a time on this machine (several worktrees may run make test)."""
    with open("/var/lock/layercache-package-test.lock", "w") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                need(time.monotonic() < deadline, "another package test holds the lock")
                time.sleep(0.5)
        yield


# --- 1. the .deb -------------------------------------------------------------------------

def make_deb(args, tmp):
    out = os.path.join(tmp, "cpack")
    run(["cpack", "-G", "DEB", "-B", out, "--config",
         os.path.join(args.build_dir, "CPackConfig.cmake")], timeout=300)
    debs = [f for f in os.listdir(out) if f.endswith(".deb")]
    need(len(debs) == 1, f"cpack made {debs}")
    version = run([os.path.join(args.build_dir, "layercached"), "--version"]).stdout.split()[1]
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    need(debs[0] == f"layercache_{version}_{arch}.deb",
         f"package name {debs[0]}, want layercache_{version}_{arch}.deb")
    return os.path.join(out, debs[0]), version


def depends_of(deb):
    field = run(["dpkg-deb", "-f", deb, "Depends"]).stdout
    return {d.strip().split()[0] for d in field.split(",") if d.strip()}


@functools.lru_cache(maxsize=None)
def owner_package(library):
    for path in (library, os.path.realpath(library)):  # /lib is /usr/lib on Debian 12
        r = run(["dpkg", "-S", path], check=False)
        if r.returncode == 0:
            return r.stdout.split(":")[0].strip()
    raise Failed(f"{library}: no package owns it")


def check_libraries_covered(root, depends):
    """Every library the binaries load directly comes from a package in Depends."""
    for binary in ("usr/bin/layercached", "usr/bin/layercachectl"):
        path = os.path.join(root, binary)
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                            run(["readelf", "-d", path]).stdout)
        need(needed, f"{binary}: no NEEDED entries")
        resolved = {}
        for line in run(["ldd", path]).stdout.splitlines():
            parts = line.split("=>")
            if len(parts) == 2:
                resolved[parts[0].strip()] = parts[1].split("(")[0].strip()
        for soname in needed:
            need(resolved.get(soname, "not found") != "not found", f"{binary}: {soname} not found")
            package = owner_package(resolved[soname])
            need(package in depends,
                 f"{binary} needs {soname} from {package}, not in Depends {sorted(depends)}")


def check_deb(deb, version, src, tmp):
    fields = {k: run(["dpkg-deb", "-f", deb, k]).stdout.strip()
              for k in ("Package", "Version", "Architecture", "Maintainer", "Description")}
    need(fields["Package"] == "layercache" and fields["Version"] == version, f"{fields}")
    need(fields["Maintainer"] and fields["Description"], f"{fields}")
    depends = depends_of(deb)
    need("adduser" in depends, f"Depends lacks adduser (postinst): {sorted(depends)}")
    need("ca-certificates" in depends,
         f"Depends lacks ca-certificates (HTTPS upstreams): {sorted(depends)}")
    root = os.path.join(tmp, "data")
    control = os.path.join(tmp, "control")
    run(["dpkg-deb", "-x", deb, root])
    run(["dpkg-deb", "-e", deb, control])
    check_libraries_covered(root, depends)
    need(set(read(os.path.join(control, "conffiles")).split()) == CONFFILES,
         f"conffiles: {read(os.path.join(control, 'conffiles'))}")
    for script in ("postinst", "prerm", "postrm"):
        path = os.path.join(control, script)
        need(os.stat(path).st_mode & 0o777 == 0o755, f"{script}: mode")
        need(read(path) == read(os.path.join(src, "packaging", "debian", script)),
             f"{script} differs from packaging/debian/{script}")
        run(["sh", "-n", path])
        if shutil.which("shellcheck"):
            run(["shellcheck", "--shell=sh", path])
    return fields


# --- 2. installed ------------------------------------------------------------------------

def apt_get(*words):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=120",
         *words], timeout=600, env=env)


def unit_directives():
    out = {}
    for line in read(UNIT).splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def check_unit(user):
    unit = unit_directives()
    need(unit["Type"] == ["notify"], f"Type={unit['Type']}")
    need(unit["User"] == ["layercache"] and user.pw_name == "layercache", "User=layercache")
    exe = unit["ExecStart"][0].split()[0]
    need(os.access(exe, os.X_OK), f"ExecStart {exe} is not installed")
    for doc in unit["Documentation"]:
        need(doc.startswith("file://") and os.path.isfile(doc[len("file://"):]),
             f"Documentation={doc}: not a file the package installs")
    for credential in unit["LoadCredential"]:
        source = credential.split(":", 1)[1]
        need(os.path.isfile(source), f"LoadCredential {source}: missing, the unit would fail")
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        print("systemd-analyze not found: unit checked by its fields only")
        return
    r = run([analyze, "verify", "--man=no", UNIT], check=False)
    ours = [l for l in (r.stdout + r.stderr).splitlines() if "layercached.service" in l]
    need(r.returncode == 0 and not ours, f"systemd-analyze verify: {r.stdout}{r.stderr}")


def check_installed(src):
    for path in ("/usr/bin/layercached", "/usr/bin/layercachectl"):
        need(os.access(path, os.X_OK), f"{path} missing")
    need(read(UNIT) == read(os.path.join(src, "deploy/systemd/layercached.service")), UNIT)
    need(read("/etc/layercache/layercache.yaml") ==
         read(os.path.join(src, "deploy/systemd/layercache.yaml")), "packaged config")
    for doc in DOCS:
        need(os.path.isfile(f"/usr/share/doc/layercache/{doc}"), f"doc {doc} missing")
    conffiles = {l.split()[0] for l in run(["dpkg-query", "-W", "-f=${Conffiles}",
                                            "layercache"]).stdout.splitlines() if l.strip()}
    need(conffiles == CONFFILES, f"dpkg's conffiles: {conffiles}")
    for path, mode in (("/etc/layercache/credentials", 0o700),
                       ("/etc/layercache/credentials/registry-password", 0o600)):
        st = os.stat(path)
        need(st.st_uid == 0 and stat.S_IMODE(st.st_mode) == mode, f"{path}: owner or mode")
    user = pwd.getpwnam("layercache")
    need(user.pw_uid < 1000 and user.pw_shell == "/usr/sbin/nologin" and
         user.pw_dir == "/var/lib/layercache", f"not a system user: {user}")
    need(grp.getgrgid(user.pw_gid).gr_name == "layercache", "primary group layercache")
    st = os.stat("/var/lib/layercache")
    need(st.st_uid == user.pw_uid and st.st_gid == user.pw_gid and
         stat.S_IMODE(st.st_mode) == 0o750, "/var/lib/layercache: owner or mode")
    check_unit(user)
    if os.access("/usr/bin/deb-systemd-helper", os.X_OK):  # enabled as dh_installsystemd does
        need(os.path.islink("/etc/systemd/system/multi-user.target.wants/layercached.service"),
             "postinst did not enable layercached.service")
    # postinst again (an upgrade's configure) changes nothing.
    run(["/var/lib/dpkg/info/layercache.postinst", "configure", "0.0.0"])
    need(pwd.getpwnam("layercache") == user, "postinst changed the user")
    run(["runuser", "-u", "layercache", "--", "/usr/bin/layercached", "--check-config",
         "/etc/layercache/layercache.yaml"])
    return user


# --- 3. the installed daemon -------------------------------------------------------------

class NotifySocket:
    """The service manager's end of sd_notify: an abstract datagram socket."""

    def __init__(self):
        self.name = f"@layercache-package-test-{os.getpid()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])

    def receive(self, timeout=30):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        except socket.timeout:
            return None


def start_registry(tmp):
    port = free_port()
    conf = os.path.join(tmp, "registry.yml")
    with open(conf, "w") as f:
        f.write(f"version: 0.1\nlog: {{level: warn}}\n"
                f"storage: {{filesystem: {{rootdirectory: {tmp}/registry}}}}\n"
                f"http: {{addr: 127.0.0.1:{port}}}\n")
    proc = subprocess.Popen(["docker-registry", "serve", conf], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(tmp, "registry.log"), "w"))
    wait_http(f"http://127.0.0.1:{port}/v2/", proc)
    return proc, port


def wait_http(url, proc, limit=20):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        need(proc.poll() is None, f"{url}: the server exited ({proc.returncode})")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2):
                return
        time.sleep(0.1)
    raise Failed(f"{url}: no answer in {limit} s")


def daemon_config(tmp, store, registry_port):
    """The packaged config with free loopback ports, a temporary store and the local
    registry as the only upstream."""
    text = read("/etc/layercache/layercache.yaml")
    port, admin = free_port(), free_port()
    for old, new in (("127.0.0.1:5000", f"127.0.0.1:{port}"),
                     ("127.0.0.1:9401", f"127.0.0.1:{admin}"),
                     ("path: /var/lib/layercache", f"path: {store}")):
        need(old in text, f"packaged config has no {old!r}")
        text = text.replace(old, new)
    text = text[:text.index("\nupstreams:")] + (
        f"\nupstreams:\n  - name: local\n    url: http://127.0.0.1:{registry_port}\n"
        "    default: true\n")
    path = os.path.join(tmp, "layercache.yaml")
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path, port, admin


def pull_and_verify(tmp, port, digest):
    out = os.path.join(tmp, "pulled")
    run(["skopeo", "copy", "-q", "--src-tls-verify=false",
         f"docker://127.0.0.1:{port}/pkgtest/app:v1", f"dir:{out}"], timeout=120)
    blobs = 0
    for name in os.listdir(out):
        with open(os.path.join(out, name), "rb") as f:
            got = hashlib.sha256(f.read()).hexdigest()
        if name == "manifest.json":
            need(f"sha256:{got}" == digest, f"manifest sha256:{got}, pushed {digest}")
        elif name != "version":
            need(got == name, f"blob {name} has sha256 {got}")
            blobs += 1
    need(blobs >= 3, f"{blobs} blobs pulled (config + 2 layers expected)")


def run_installed_daemon(args, tmp, user):
    registry, registry_port = start_registry(tmp)
    daemon = None
    try:
        digest = run([args.seed, "--registry", f"http://127.0.0.1:{registry_port}", "--repo",
                      "pkgtest/app", "--tag", "v1", "--layers", "1MiB,3MiB"]).stdout.strip()
        store = os.path.join(tmp, "store")
        os.mkdir(store, 0o750)
        os.chown(store, user.pw_uid, user.pw_gid)
        config, port, admin = daemon_config(tmp, store, registry_port)
        notify = NotifySocket()
        log = open(os.path.join(tmp, "layercached.log"), "w")
        daemon = subprocess.Popen(["/usr/bin/layercached", "--config", config], stdout=log,
                                  stderr=subprocess.STDOUT, user=user.pw_uid,
                                  group=user.pw_gid, extra_groups=[],
                                  env=dict(os.environ, NOTIFY_SOCKET=notify.name))
        ready = notify.receive()
        need(ready == "READY=1", f"first notification {ready!r}\n{read(log.name)}")
        status = read(f"/proc/{daemon.pid}/status")
        need(re.search(rf"^Uid:\s+{user.pw_uid}\s", status, re.M), "not run as layercache")
        pull_and_verify(tmp, port, digest)
        stats = json.loads(run(["/usr/bin/layercachectl", "--admin", f"127.0.0.1:{admin}",
                                "stats"]).stdout)
        print("layercachectl stats (store):", json.dumps(stats.get("store")))
        for dirpath, _, files in os.walk(store):
            for name in files:
                need(os.stat(os.path.join(dirpath, name)).st_uid == user.pw_uid,
                     f"{name} in the store is not the layercache user's")
        daemon.send_signal(signal.SIGTERM)
        need(notify.receive() == "STOPPING=1", "no STOPPING=1 on SIGTERM")
        need(daemon.wait(timeout=60) == 0, f"exit {daemon.returncode}\n{read(log.name)}")
    finally:
        for proc in (daemon, registry):
            if proc and proc.poll() is None:
                proc.kill()
                proc.wait()


# --- 4. purged ---------------------------------------------------------------------------

def check_purged():
    need(package_state() in ("", "unknown ok not-installed"), f"dpkg: {package_state()}")
    left = [p for p in PURGED if os.path.lexists(p)]
    need(not left, f"left after purge: {left}")
    for lookup, what in ((pwd.getpwnam, "user"), (grp.getgrnam, "group")):
        with contextlib.suppress(KeyError):
            lookup("layercache")
            raise Failed(f"the layercache {what} is left after purge")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build-dir", required=True)
    p.add_argument("--source-dir", required=True)
    p.add_argument("--seed", required=True, help="layercache-seed: pushes the test image")
    args = p.parse_args()
    installed = False
    # ctest stops a test that runs too long with SIGTERM first: purge on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("SIGTERM"))
    try:
        can_install()
        with machine_lock(), tempfile.TemporaryDirectory(prefix="layercache-pkg-") as tmp:
            os.chmod(tmp, 0o755)  # the layercache user reads the config in it
            recover_interrupted_run()
            preconditions()
            step("cpack -G DEB")
            deb, version = make_deb(args, tmp)
            check_deb(deb, version, args.source_dir, tmp)
            step(f"{os.path.basename(deb)}: {os.path.getsize(deb)} bytes; apt-get install")
            installed = True
            with open(MARKER, "w") as f:
                f.write(f"{deb}\n")
            apt_get("install", deb)
            user = check_installed(args.source_dir)
            step("installed; /usr/bin/layercached as the layercache user")
            run_installed_daemon(args, tmp, user)
            step("pulled through it; apt-get purge")
            apt_get("purge", "layercache")
            installed = False
            os.unlink(MARKER)
            check_purged()
            step("purged")
    except Skipped as e:
        print(f"SKIP: {e}")
        return SKIP
    except (Failed, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as e:
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        if installed and package_state():
            print("purging the package this test installed", file=sys.stderr)
            try:
                apt_get("purge", "layercache")
                os.unlink(MARKER)
            except (Failed, subprocess.TimeoutExpired, OSError) as e:
                print(f"purge failed: {e}", file=sys.stderr)
    print("package: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
