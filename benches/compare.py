#!/usr/bin/env python3
"""p2pft against other BitTorrent clients: the same swarm, the same machine.

Builds one swarm (1 seed + N leechers on 127.0.0.1, one process each, a
pseudo-random file, 256 KiB pieces by default) for each client in turn and
times it the same way for all. The seed is started first, and the clock starts
once it is ready to serve (the BitTorrent clients: it has announced itself to
this script's tracker, rqbit after hashing its file; p2pft: it listens, its
check record left by `p2pft meta`). Then every leecher is started at once,
and the wall time runs to the last leecher's completion as the client itself
reports it: p2pft, the log's "has downloaded the complete file" (written once
the file is flushed to the disk); libtorrent, the torrent is seeding (polled
every 5 ms); aria2, its download-complete hook; rqbit, its HTTP API says
finished (polled every 10 ms). Then `os.sync()` is timed: what a client left
in the page cache is written then (p2pft writes with direct I/O and flushes
before it says complete).

CPU seconds are every peer process's own (`wait4`), the seed's included, less
what the seed spent before the clock started. Peak RSS is each process's
VmHWM, read from /proc while it runs (`wait4`'s ru_maxrss would include this
script's own memory, which a child inherits as its floor at exec). Each
leecher's file is compared with the seed's afterwards.

Peers find each other through a small HTTP tracker run by this script (DHT,
local discovery, UPnP, NAT-PMP, peer exchange and uTP off); each client runs
with its defaults otherwise, what a user who installs it gets. Variants:
`p2pft-strict` (`P2pftStrict 1`: SPEC.md exactly, no extensions) and
`libtorrent-hps` (libtorrent's `high_performance_seed` settings pack). Each
run rotates the order of the clients.

Needs: Debian's python3-libtorrent (so run this with /usr/bin/python3), aria2c,
an rqbit binary, and target/release/p2pft. See docs/PERFORMANCE.md, "Against
other BitTorrent clients", for the commands.
"""

import argparse
import filecmp
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CLIENTS = ["p2pft", "p2pft-strict", "libtorrent", "libtorrent-hps", "aria2", "rqbit"]
FILE = "bench.bin"


def size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper()
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def bencode(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, str):
        return bencode(v.encode())
    if isinstance(v, list):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    if isinstance(v, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, x) for k, x in v.items())
        return b"d" + b"".join(bencode(k) + bencode(x) for k, x in items) + b"e"
    raise TypeError(type(v))


HANDED_OUT = set()  # ports given to a swarm by this run of the script


def ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(n):
    """`n` distinct ports free on 127.0.0.1, below the ephemeral range, never
    one handed out before in this run. A port the kernel picks with bind(0) is
    one it may also give a peer's outgoing connection before the program that
    is to listen on it binds it: once, in a 32-peer swarm, an rqbit leecher
    could not bind its HTTP API ("Address already in use"). And a port used by
    an earlier swarm may still be in TIME_WAIT."""
    low = ephemeral_low()
    first = 10000 if low > 12000 else 1024
    ports = []
    for _ in range(100 * n + 1000):
        if len(ports) == n:
            return ports
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", random.randrange(first, low) if low > first else 0))  # 0: any
            except OSError:
                continue
            port = s.getsockname()[1]
        if port in HANDED_OUT:
            continue
        HANDED_OUT.add(port)
        ports.append(port)
    if len(ports) == n:
        return ports
    raise RuntimeError("no %d free ports on 127.0.0.1 below %d" % (n, low))


class Tracker:
    """An HTTP tracker on 127.0.0.1 that hands every announcer the others."""

    def __init__(self):
        self.lock = threading.Lock()
        self.peers = {}  # port -> time of its first announce
        tracker = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                query = urllib.parse.urlsplit(self.path).query
                q = urllib.parse.parse_qs(query, encoding="latin-1")
                port = int(q.get("port", ["0"])[0])
                with tracker.lock:
                    tracker.peers.setdefault(port, time.time())
                    others = [p for p in tracker.peers if p != port]
                compact = b"".join(socket.inet_aton("127.0.0.1") + p.to_bytes(2, "big") for p in others)
                body = bencode({"interval": 2, "min interval": 1, "peers": compact})
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a client stopped (the run ended) while it announced

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/announce" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self):
        with self.lock:
            self.peers.clear()

    def announced(self, port):
        with self.lock:
            return port in self.peers


def listening(port):
    """Whether something listens on 127.0.0.1:`port` (read from /proc, no connection made)."""
    want = ":%04X" % port
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(want) and fields[3] == "0A":
                return True
    return False


def ended(p):
    """How process `p` ended (a `waitid` result), or None while it runs; it is
    not reaped, so that its rusage can be read later."""
    return os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)


def exited(p):
    return ended(p) is not None


def wait_until(what, check, timeout, procs, may_exit=False):
    """Polls `check` until it holds; fails at `timeout` seconds, or as soon as
    one of `procs` ends (with `may_exit`, as soon as one ends in failure)."""
    deadline = time.monotonic() + timeout
    while not check():
        for p in procs:
            how = ended(p)
            if how is not None and not (may_exit and how.si_code == os.CLD_EXITED and how.si_status == 0):
                raise RuntimeError("%s: a peer ended first (exit status %s)" % (what, p.wait()))
        if time.monotonic() > deadline:
            raise RuntimeError("%s: not after %d s" % (what, timeout))
        time.sleep(0.002)


class Swarm:
    """One run of one client: a directory, its peer processes, their completion times."""

    def __init__(self, client, args, root, master, torrent, tracker):
        self.client, self.args, self.tracker = client, args, tracker
        self.kind = client.split("-")[0]  # p2pft-strict runs as p2pft, libtorrent-hps as libtorrent
        self.dir = tempfile.mkdtemp(prefix="%s-" % client, dir=root)
        self.master, self.torrent = master, torrent
        n = args.leechers + 1
        self.ports = free_ports(n)
        self.peer_dirs = [os.path.join(self.dir, "peer_%d" % (1001 + i)) for i in range(n)]
        # The seed's directory is the client's own, made with every hard link
        # of the file before p2pft's check record (a new link moves the file's
        # change time, which would void the record).
        os.symlink(seed_dir(root, client), self.peer_dirs[0])
        for d in self.peer_dirs[1:]:
            os.makedirs(d)
        self.procs = []
        self.done = {}  # leecher index -> completion time
        self.rss = {}  # pid -> peak RSS seen, KiB
        self.polled = 0.0
        self.sampled = 0.0
        self.logs = [LogTail(os.path.join(self.dir, "log_peer_%d.log" % (1001 + i))) for i in range(n)]
        self.api_ports = free_ports(n) if client == "rqbit" else []

    # -- starting peers ---------------------------------------------------------

    def start(self, i):
        cmd, env = getattr(self, "cmd_" + self.kind)(i), dict(os.environ)
        env["P2PFT_INDEX"] = str(i)  # for aria2's hook
        out = open(os.path.join(self.dir, "out_%d.txt" % (1001 + i)), "w")
        # A process group of its own, to stop it whole, but this script's session: with the
        # kernel's autogroups, a session per peer would share the CPU out per process
        # instead of per thread (p2pft at 16 KiB pieces: 2.0 s in one session, 3.1 s in five).
        # --session-per-peer measures that case: each peer started from its own terminal.
        if self.args.session_per_peer:
            group = {"start_new_session": True}
        elif sys.version_info >= (3, 11):
            group = {"process_group": 0}
        else:
            group = {"preexec_fn": os.setpgrp}
        p = subprocess.Popen(cmd, cwd=self.dir, stdout=out, stderr=subprocess.STDOUT, env=env, **group)
        self.procs.append(p)

    def cmd_p2pft(self, i):
        if i == 0:
            a = self.args
            with open(os.path.join(self.dir, "Common.cfg"), "w") as f:
                f.write("NumberOfPreferredNeighbors %d\nUnchokingInterval 1\nOptimisticUnchokingInterval 2\n"
                        "FileName %s\nFileSize %d\nPieceSize %d\n" % (a.k, FILE, a.file_size, a.piece_size))
                if self.client == "p2pft-strict":
                    f.write("P2pftStrict 1\n")
            with open(os.path.join(self.dir, "PeerInfo.cfg"), "w") as f:
                for j, port in enumerate(self.ports):
                    f.write("%d 127.0.0.1 %d %d\n" % (1001 + j, port, int(j == 0)))
            shutil.copy(self.args.p2pft_meta, os.path.join(self.dir, FILE + ".meta.json"))
        return [self.args.p2pft, "peer", str(1001 + i), "--dir", self.dir]

    def cmd_libtorrent(self, i):
        return [sys.executable, os.path.abspath(__file__), "--lt-peer", self.torrent, self.peer_dirs[i],
                str(self.ports[i]), "seed" if i == 0 else "leech", os.path.join(self.dir, "done_%d" % i),
                "high_performance_seed" if self.client == "libtorrent-hps" else "default_settings"]

    def cmd_aria2(self, i):
        hook = os.path.join(self.dir, "hook.sh")
        if i == 0:
            with open(hook, "w") as f:
                f.write('#!/bin/sh\ndate +%s.%N > "$(dirname "$0")/done_$P2PFT_INDEX"\n')
            os.chmod(hook, 0o755)
        cmd = ["aria2c", "--dir=" + self.peer_dirs[i], "--listen-port=%d" % self.ports[i],
               "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
               "--enable-peer-exchange=false", "--seed-ratio=0.0", "--file-allocation=falloc",
               "--summary-interval=0", "--console-log-level=warn", "--on-bt-download-complete=" + hook,
               self.torrent]
        if i == 0:
            cmd.insert(1, "--bt-seed-unverified=true")
        return cmd

    def cmd_rqbit(self, i):
        return [self.args.rqbit, "--disable-dht", "--disable-dht-persistence", "--disable-upnp-port-forward",
                "--disable-lsd", "--http-api-listen-addr", "127.0.0.1:%d" % self.api_ports[i],
                "--listen-ip", "127.0.0.1", "--listen-port", str(self.ports[i]), "--announce-port", str(self.ports[i]),
                "download", "--overwrite", "-o", self.peer_dirs[i], self.torrent]

    # -- readiness and completion ------------------------------------------------

    def seed_ready(self):
        if self.kind == "p2pft":
            return listening(self.ports[0])
        if self.kind == "rqbit" and not self.rqbit_finished(0):
            return False
        return self.tracker.announced(self.ports[0])

    def rqbit_finished(self, i):
        try:
            url = "http://127.0.0.1:%d/torrents/0/stats/v1" % self.api_ports[i]
            with urllib.request.urlopen(url, timeout=1) as r:
                stats = json.load(r)
        except OSError:
            return False
        return bool(stats.get("finished")) and stats.get("state") == "live"

    def poll_done(self):
        if self.kind == "rqbit":  # an HTTP request each: not more often than every 10 ms
            now = time.monotonic()
            if now - self.polled < 0.01:
                return False
            self.polled = now
        for i in range(1, len(self.ports)):
            if i in self.done:
                continue
            if self.kind == "p2pft":
                t = self.logs[i].completion()
            elif self.kind == "rqbit":
                t = time.time() if self.rqbit_finished(i) else None
            else:
                t = read_time(os.path.join(self.dir, "done_%d" % i))
            if t is not None:
                self.done[i] = t
        return len(self.done) == len(self.ports) - 1

    # -- one run -----------------------------------------------------------------

    def sample_rss(self):
        """Peak RSS (VmHWM) of every live peer. Read from /proc while each runs:
        `wait4`'s ru_maxrss would also count this script's own memory, which a
        child inherits as its floor at exec."""
        for p in self.procs:
            try:
                with open("/proc/%d/status" % p.pid) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.rss[p.pid] = max(self.rss.get(p.pid, 0), int(line.split()[1]))
            except (FileNotFoundError, ProcessLookupError):
                pass

    def run(self):
        self.tracker.reset()
        self.start(0)
        wait_until("%s seed ready" % self.client, self.seed_ready, 120, self.procs)
        t0 = time.time()
        ready_cpu = cpu_secs(self.procs[0].pid)  # the seed getting ready (rqbit hashes its file): not counted
        for i in range(1, len(self.ports)):
            self.start(i)

        def complete():
            if time.monotonic() - self.sampled >= 0.02:  # a high-water mark: no need to read it often
                self.sample_rss()
                self.sampled = time.monotonic()
            return self.poll_done()

        # p2pft peers end by themselves (exit 0) once every peer is complete; the others seed on.
        wait_until("%s swarm complete" % self.client, complete, self.args.timeout, self.procs,
                   may_exit=self.kind == "p2pft")
        wall = max(self.done.values()) - t0
        if self.kind == "p2pft":
            wait_until("p2pft peers exit", lambda: all(exited(p) for p in self.procs) or self.sample_rss(),
                       60, [])
        else:
            self.sample_rss()
            for p in self.procs:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        per_peer = []
        for p in self.procs:
            _, p.returncode, usage = os.wait4(p.pid, 0)
            per_peer.append(usage.ru_utime + usage.ru_stime)
        per_peer[0] -= ready_cpu
        cpu = sum(per_peer)
        rss = [self.rss.get(p.pid, 0) / 1024 for p in self.procs]
        s0 = time.monotonic()
        os.sync()
        sync = time.monotonic() - s0
        same = all(files_equal(self.master, os.path.join(d, FILE)) for d in self.peer_dirs[1:])
        delivered = self.args.file_size * (len(self.ports) - 1)
        return {
            "client": self.client, "wall_secs": wall, "sync_secs": sync,
            "delivered_mib_per_sec": delivered / wall / (1 << 20),
            "cpu_secs_per_delivered_gib": cpu / (delivered / (1 << 30)), "cpu_secs": per_peer,
            "peak_rss_mb_max": max(rss), "peak_rss_mb": rss, "files_identical": same,
            "leechers_complete_secs": sorted(t - t0 for t in self.done.values()),
        }

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if self.args.keep:
            for d in self.peer_dirs[1:]:  # the logs and outputs, not the files
                shutil.rmtree(d, ignore_errors=True)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def cpu_secs(pid):
    """User and system CPU seconds of a live process so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LogTail:
    """A p2pft log read as it grows (reading it whole at every poll would take
    the CPU the swarm needs: a 16 KiB-piece run logs 32,768 lines a leecher)."""

    PHRASE = b"has downloaded the complete file."

    def __init__(self, path):
        self.path, self.offset, self.partial = path, 0, b""

    def completion(self):
        """The time of the log's completion line, once it is there."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return None
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            if line.rstrip().endswith(self.PHRASE):
                stamp = line[:23].decode()  # 2026-11-24 14:03:07.412
                return time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:23]) / 1000
        return None


def read_time(path):
    try:
        with open(path) as f:
            text = f.read().strip()
        return float(text) if text else None
    except (FileNotFoundError, ValueError):
        return None


def files_equal(a, b):
    try:
        return filecmp.cmp(a, b, shallow=False)
    except FileNotFoundError:
        return False


def lt_peer(torrent, save_path, port, role, done_path, preset):
    """One libtorrent peer (a child process of this script), with one of
    libtorrent's setting packs (`default_settings` or `high_performance_seed`)."""
    import libtorrent as lt

    settings = getattr(lt, preset)()
    settings.update({
        "listen_interfaces": "127.0.0.1:%s" % port, "enable_dht": False, "enable_lsd": False,
        "enable_upnp": False, "enable_natpmp": False, "enable_outgoing_utp": False,
        "enable_incoming_utp": False, "allow_multiple_connections_per_ip": True, "alert_mask": 0,
    })
    session = lt.session(settings)
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(torrent)
    atp.save_path = save_path
    if role == "seed":
        atp.flags |= lt.torrent_flags.seed_mode
    handle = session.add_torrent(atp)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    while not handle.status().is_seeding and not stop:
        time.sleep(0.005)
    if not stop:
        with open(done_path + ".tmp", "w") as f:
            f.write("%.6f\n" % time.time())
        os.rename(done_path + ".tmp", done_path)
    while not stop:
        time.sleep(0.01)
    # Seeding means every piece passed its hash, not that every block is in the
    # file yet: a session shuts down only once its disk jobs are done.
    del handle
    del session


def seed_dir(root, client):
    return os.path.join(root, "seed-" + client)


def prepare(args, root, clients):
    """The file (hard-linked into each client's seed directory) and the torrent's info."""
    master = os.path.join(root, FILE)
    with open(master, "wb") as f:
        left = args.file_size
        while left:
            n = min(left, 1 << 24)
            f.write(os.urandom(n))
            left -= n
    for client in clients:
        os.makedirs(seed_dir(root, client))
        os.link(master, os.path.join(seed_dir(root, client), FILE))
    pieces = []
    with open(master, "rb") as f:
        while chunk := f.read(args.piece_size):
            pieces.append(hashlib.sha1(chunk).digest())
    return master, {"length": args.file_size, "name": FILE, "piece length": args.piece_size,
                    "pieces": b"".join(pieces)}


def prepare_p2pft(args, root, clients):
    """Metadata, and the seed's check record beside its file, made once by `p2pft meta`
    after the last hard link (as `p2pft bench` does), so the seed serves at once."""
    time.sleep(0.1)  # past the check record's racy margin
    for client in clients:
        if client.startswith("p2pft"):
            subprocess.run([args.p2pft, "meta", os.path.join(seed_dir(root, client), FILE), "--piece-size",
                            str(args.piece_size), "--dir", root], check=True, stdout=subprocess.DEVNULL)
    args.p2pft_meta = os.path.join(root, FILE + ".meta.json")


def version(args, client):
    kind = client.split("-")[0]
    cmd = {
        "p2pft": [args.p2pft, "--version"],
        "libtorrent": [sys.executable, "-c", "import libtorrent; print('libtorrent', libtorrent.__version__)"],
        "aria2": ["aria2c", "--version"],
        "rqbit": [args.rqbit, "--version"],
    }[kind]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit("%s is not usable here (%s): see docs/PERFORMANCE.md, \"Against other BitTorrent clients\"" % (client, e))
    return out.splitlines()[0].strip()


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--lt-peer":
        return lt_peer(*sys.argv[2:8])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated, of %s" % ",".join(CLIENTS))
    ap.add_argument("--leechers", type=int, default=4)
    ap.add_argument("--file-size", type=size, default=size("512M"))
    ap.add_argument("--piece-size", type=size, default=size("256K"))
    ap.add_argument("-k", type=int, default=4, help="p2pft's NumberOfPreferredNeighbors")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to build the swarms (default: the system temp dir)")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--p2pft", default=os.path.join(repo, "target", "release", "p2pft"),
                    help="the p2pft binary (default: this repository's release build)")
    ap.add_argument("--rqbit", default=shutil.which("rqbit") or "rqbit")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--session-per-peer", action="store_true",
                    help="start each peer in a session of its own, as from its own terminal")
    ap.add_argument("--keep", action="store_true", help="keep each swarm's directory (logs and outputs, not the files)")
    ap.add_argument("--json", action="store_true", help="one JSON record a run instead of a table")
    args = ap.parse_args()
    if args.leechers < 1 or args.runs < 1 or args.k < 1:
        ap.error("--leechers, --runs and -k must be at least 1")
    if not 0 < args.piece_size <= args.file_size:
        ap.error("the piece size must be from 1 byte to the file size")
    clients = [c for c in args.clients.split(",") if c]
    for c in clients:
        if c not in CLIENTS:
            ap.error("unknown client %r" % c)
    args.p2pft = os.path.abspath(args.p2pft)
    versions = {c: version(args, c) for c in clients}
    root = tempfile.mkdtemp(prefix="p2pft-compare-", dir=args.dir)
    need, free = args.file_size * (args.leechers + 1), shutil.disk_usage(root).free
    if free < need:
        os.rmdir(root)
        raise SystemExit("error: not enough free space in %s: a swarm writes up to %d MiB, %d MiB are free;"
                         " use --dir elsewhere or a smaller --file-size" % (root, need >> 20, free >> 20))
    results = []
    try:
        master, info = prepare(args, root, clients)
        if any(c.startswith("p2pft") for c in clients):
            prepare_p2pft(args, root, clients)
        tracker = Tracker()
        torrent = os.path.join(root, FILE + ".torrent")
        with open(torrent, "wb") as f:
            f.write(bencode({"announce": tracker.url, "info": info}))
        if not args.json:
            print("%d leechers + 1 seed, %d MiB file, %d KiB pieces, %d runs; clients: %s"
                  % (args.leechers, args.file_size >> 20, args.piece_size >> 10, args.runs,
                     ", ".join(sorted(set(versions.values())))))
            print("%-15s %4s %8s %9s %8s %10s %8s  %s" % ("client", "run", "wall s", "MiB/s", "sync s",
                                                          "CPU s/GiB", "RSS MB", "files"))
        for run in range(args.runs):
            order = clients[run % len(clients):] + clients[:run % len(clients)]
            for client in order:
                with open(master, "rb") as f:  # the seed's file in the page cache, for every client alike
                    while f.read(1 << 20):
                        pass
                os.sync()  # nothing of earlier runs left to write back
                swarm = Swarm(client, args, root, master, torrent, tracker)
                try:
                    r = swarm.run()
                finally:
                    swarm.cleanup()
                r["run"], r["version"] = run + 1, versions[client]
                results.append(r)
                if args.json:
                    print(json.dumps(r), flush=True)
                else:
                    print("%-15s %4d %8.3f %9.1f %8.3f %10.2f %8.1f  %s" % (
                        client, run + 1, r["wall_secs"], r["delivered_mib_per_sec"], r["sync_secs"],
                        r["cpu_secs_per_delivered_gib"], r["peak_rss_mb_max"],
                        "identical" if r["files_identical"] else "DIFFER"), flush=True)
    finally:
        if args.keep:
            print("kept: %s" % root, file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    if not args.json and args.runs > 1:
        print("medians:")
        for client in clients:
            rs = [r for r in results if r["client"] == client]
            keys = ["wall_secs", "delivered_mib_per_sec", "sync_secs", "cpu_secs_per_delivered_gib", "peak_rss_mb_max"]
            print("%-15s      %8.3f %9.1f %8.3f %10.2f %8.1f"
                  % (client, *(statistics.median(r[k] for r in rs) for k in keys)))
    return 0 if all(r["files_identical"] for r in results) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:  # a swarm that failed: its peers' output is in out_<ID>.txt (--keep)
        print("error: %s" % e, file=sys.stderr)
        sys.exit(1)
