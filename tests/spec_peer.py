#!/usr/bin/env python3
"""A peer that knows only SPEC.md: an independent implementation, used by the
tests to mix "another team's peer" into p2pft swarms.

Usage: spec_peer.py <PeerID>, run in the swarm directory. Environment:
  SPEC_PEER_ASCII=1            send the handshake padded with ASCII '0' and the ID
                               as four ASCII digits (a variant seen in the wild)
  SPEC_PEER_STRICT_RESERVED=1  close any connection whose handshake has a
                               non-zero byte in the ten reserved bytes
  SPEC_PEER_CORRUPT=1          a liar: every piece it serves has one byte flipped
Threads and one big lock; no cleverness. Exits 0 when every peer has the file.
"""
import os, random, socket, struct, sys, threading, time
from datetime import datetime

HEADER = b"P2PFILESHARINGPROJ"


def read_cfg():
    common = {}
    for line in open("Common.cfg"):
        parts = line.split()
        if len(parts) == 2:
            common[parts[0]] = parts[1]
    peers = []
    for line in open("PeerInfo.cfg"):
        parts = line.split()
        if len(parts) == 4:
            peers.append((int(parts[0]), parts[1], int(parts[2]), parts[3] == "1"))
    return common, peers


class Peer:
    def __init__(self, me):
        common, self.peers = read_cfg()
        self.me = me
        self.k = int(common["NumberOfPreferredNeighbors"])
        self.p = float(common["UnchokingInterval"])
        self.m = float(common["OptimisticUnchokingInterval"])
        self.size = int(common["FileSize"])
        self.piece = int(common["PieceSize"])
        self.n = (self.size + self.piece - 1) // self.piece
        self.ids = [p[0] for p in self.peers]
        self.pos = self.ids.index(me)
        _, self.host, self.port, has = self.peers[self.pos]
        os.makedirs(f"peer_{me}", exist_ok=True)
        path = f"peer_{me}/{common['FileName']}"
        if has:
            self.fd = os.open(path, os.O_RDONLY)
        else:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            os.ftruncate(self.fd, self.size)
        self.have = [has] * self.n
        self.lock = threading.RLock()
        self.logf = open(f"log_peer_{me}.log", "a")
        self.conns = {}          # id -> socket
        self.send_locks = {}     # id -> lock
        self.their = {}          # id -> list of bool
        self.interested_in_me = set()
        self.unchoked = set()
        self.preferred = []
        self.optimistic = None
        self.requested = {}      # piece -> id
        self.outstanding = {}    # id -> piece
        self.choked_by = {}      # id -> bool
        self.rate = {}
        self.complete = set([me] if has else [])
        self.done = threading.Event()

    def log(self, text):
        now = datetime.now()
        stamp = now.strftime("%Y-%m-%d %H:%M:%S.") + f"{now.microsecond // 1000:03d}"
        self.logf.write(f"{stamp}: {text}\n")
        self.logf.flush()

    def piece_len(self, i):
        return min(self.piece, self.size - i * self.piece)

    def handshake_bytes(self):
        if os.environ.get("SPEC_PEER_ASCII") == "1":
            return HEADER + b"0" * 10 + (b"%04d" % self.me)[-4:]
        return HEADER + b"\0" * 10 + struct.pack(">I", self.me)

    def send(self, pid, typ, payload=b""):
        sock = self.conns.get(pid)
        if sock is None:
            return
        try:
            with self.send_locks[pid]:
                sock.sendall(struct.pack(">IB", 1 + len(payload), typ) + payload)
        except OSError:
            pass

    def recv_exact(self, sock, n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def do_handshake(self, sock, expect):
        sock.sendall(self.handshake_bytes())
        hs = self.recv_exact(sock, 32)
        if hs[:18] != HEADER:
            raise ValueError("bad header")
        if os.environ.get("SPEC_PEER_STRICT_RESERVED") == "1" and hs[18:28] != b"\0" * 10:
            raise ValueError("non-zero reserved bytes")
        pid = struct.unpack(">I", hs[28:])[0]
        if not expect(pid) and hs[28:].isdigit():
            pid = int(hs[28:])
        if not expect(pid):
            raise ValueError(f"unexpected peer {pid}")
        return pid

    def start_conn(self, pid, sock, dialled):
        with self.lock:
            if pid in self.conns:
                sock.close()
                return
            self.conns[pid] = sock
            self.send_locks[pid] = threading.Lock()
            self.their[pid] = [False] * self.n
            self.choked_by[pid] = True
            self.rate[pid] = 0
            self.log(f"Peer {self.me} makes a connection to Peer {pid}." if dialled
                     else f"Peer {self.me} is connected from Peer {pid}.")
            if any(self.have):
                bits = bytearray((self.n + 7) // 8)
                for i, h in enumerate(self.have):
                    if h:
                        bits[i // 8] |= 0x80 >> (i % 8)
                self.send(pid, 5, bytes(bits))
        threading.Thread(target=self.reader, args=(pid, sock), daemon=True).start()

    def dial(self, pid, host, port):
        for _ in range(600):
            try:
                sock = socket.create_connection((host, port), timeout=5)
                sock.settimeout(None)
                self.do_handshake(sock, lambda x: x == pid)
                self.start_conn(pid, sock, True)
                return
            except (OSError, EOFError):
                time.sleep(0.1)
        print(f"spec_peer {self.me}: cannot reach {pid}", file=sys.stderr)
        os._exit(1)

    def listen(self):
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((self.host, self.port))
        srv.listen(16)
        below = set(self.ids[self.pos + 1:])

        def handle(sock):
            try:
                pid = self.do_handshake(sock, lambda x: x in below)
                self.start_conn(pid, sock, False)
            except (OSError, EOFError, ValueError):
                sock.close()

        while True:
            sock, _ = srv.accept()
            threading.Thread(target=handle, args=(sock,), daemon=True).start()

    def update_interest(self, pid):
        want = any(t and not h for t, h in zip(self.their[pid], self.have))
        self.send(pid, 2 if want else 3)

    def request_next(self, pid):
        if self.choked_by.get(pid, True) or pid in self.outstanding:
            return
        cands = [i for i in range(self.n) if self.their[pid][i] and not self.have[i]
                 and i not in self.requested]
        if cands:
            i = random.choice(cands)
            self.requested[i] = pid
            self.outstanding[pid] = i
            self.send(pid, 6, struct.pack(">I", i))

    def drop_outstanding(self, pid):
        i = self.outstanding.pop(pid, None)
        if i is not None and self.requested.get(i) == pid:
            del self.requested[i]

    def check_done(self):
        if all(x in self.complete for x in self.ids):
            self.done.set()

    def reader(self, pid, sock):
        try:
            while True:
                length, typ = struct.unpack(">IB", self.recv_exact(sock, 5))
                payload = self.recv_exact(sock, length - 1) if length > 1 else b""
                with self.lock:
                    self.on_message(pid, typ, payload)
        except (OSError, EOFError, struct.error):
            pass
        with self.lock:
            self.drop_outstanding(pid)
            self.conns.pop(pid, None)
            self.unchoked.discard(pid)

    def on_message(self, pid, typ, payload):
        if typ == 0:
            self.log(f"Peer {self.me} is choked by {pid}.")
            self.choked_by[pid] = True
            self.drop_outstanding(pid)
        elif typ == 1:
            self.log(f"Peer {self.me} is unchoked by {pid}.")
            self.choked_by[pid] = False
            self.request_next(pid)
        elif typ == 2:
            self.log(f"Peer {self.me} received the 'interested' message from {pid}.")
            self.interested_in_me.add(pid)
        elif typ == 3:
            self.log(f"Peer {self.me} received the 'not interested' message from {pid}.")
            self.interested_in_me.discard(pid)
        elif typ == 4:
            i = struct.unpack(">I", payload)[0]
            self.log(f"Peer {self.me} received the 'have' message from {pid} for the piece {i}.")
            self.their[pid][i] = True
            if all(self.their[pid]):
                self.complete.add(pid)
            self.update_interest(pid)
            self.request_next(pid)
            self.check_done()
        elif typ == 5:
            for i in range(self.n):
                self.their[pid][i] = bool(payload[i // 8] & (0x80 >> (i % 8)))
            if all(self.their[pid]):
                self.complete.add(pid)
            self.update_interest(pid)
            self.check_done()
        elif typ == 6:
            i = struct.unpack(">I", payload)[0]
            if pid in self.unchoked and self.have[i]:
                data = os.pread(self.fd, self.piece_len(i), i * self.piece)
                if os.environ.get("SPEC_PEER_CORRUPT") == "1":
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                self.send(pid, 7, struct.pack(">I", i) + data)
        elif typ == 7:
            i = struct.unpack(">I", payload[:4])[0]
            data = payload[4:]
            self.rate[pid] = self.rate.get(pid, 0) + len(data)
            if self.outstanding.get(pid) == i:
                del self.outstanding[pid]
            if self.requested.get(i) == pid:
                del self.requested[i]
            if not self.have[i]:
                os.pwrite(self.fd, data, i * self.piece)
                self.have[i] = True
                count = sum(self.have)
                self.log(f"Peer {self.me} has downloaded the piece {i} from {pid}. "
                         f"Now the number of pieces it has is {count}.")
                for other in list(self.conns):
                    self.send(other, 4, struct.pack(">I", i))
                    if not any(t and not h for t, h in zip(self.their[other], self.have)):
                        self.send(other, 3)
                if all(self.have):
                    os.fsync(self.fd)
                    self.log(f"Peer {self.me} has downloaded the complete file.")
                    self.complete.add(self.me)
                    self.check_done()
            self.request_next(pid)
        else:
            raise EOFError

    def apply(self):
        target = set(self.preferred) | ({self.optimistic} if self.optimistic else set())
        for pid in list(self.unchoked - target):
            self.unchoked.discard(pid)
            self.send(pid, 0)
        for pid in target - self.unchoked:
            self.unchoked.add(pid)
            self.send(pid, 1)

    def preferred_timer(self):
        last = None
        while not self.done.is_set():
            time.sleep(self.p)
            with self.lock:
                cands = [x for x in self.interested_in_me if x in self.conns]
                random.shuffle(cands)
                if not all(self.have):
                    cands.sort(key=lambda x: -self.rate.get(x, 0))
                self.preferred = sorted(cands[: self.k])
                self.rate = {x: 0 for x in self.rate}
                if self.preferred and self.preferred != last:
                    self.log(f"Peer {self.me} has the preferred neighbors "
                             f"{','.join(map(str, self.preferred))}.")
                    last = list(self.preferred)
                self.apply()

    def optimistic_timer(self):
        while not self.done.is_set():
            time.sleep(self.m)
            with self.lock:
                cands = [x for x in self.interested_in_me if x in self.conns
                         and x not in self.unchoked]
                if cands:
                    self.optimistic = random.choice(cands)
                    self.log(f"Peer {self.me} has the optimistically unchoked neighbor "
                             f"{self.optimistic}.")
                self.apply()

    def run(self):
        threading.Thread(target=self.listen, daemon=True).start()
        for pid, host, port, _ in self.peers[: self.pos]:
            threading.Thread(target=self.dial, args=(pid, host, port), daemon=True).start()
        threading.Thread(target=self.preferred_timer, daemon=True).start()
        threading.Thread(target=self.optimistic_timer, daemon=True).start()
        with self.lock:
            self.check_done()
        self.done.wait()
        time.sleep(0.2)
        with self.lock:
            for sock in self.conns.values():
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        os._exit(0)


if __name__ == "__main__":
    Peer(int(sys.argv[1])).run()
