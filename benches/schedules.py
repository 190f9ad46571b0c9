#!/usr/bin/env python3
"""Schedules of whole pieces over capped links, without any protocol.

What a swarm could reach if its links carried pieces the way these
schedules do; it says nothing about p2pft's own figures (`p2pft sim` and
`p2pft bench --hosts` measure those). Every link has the same rate and
carries one piece at a time at that rate (a piece time is the unit of
time); a host passes a piece on only once all of it has arrived. Host 0
is the seed. Efficiency is pieces / (time to complete), before what one
TCP stream loses to headers (multiply by the 0.96-0.98 the bench prints).

  oracle       a central scheduler: whenever an uplink is free it sends the
               piece fewest hosts hold or receive to a host whose downlink
               is free (the one with the fewest pieces), if any.
  serial-pull  no central knowledge: a leecher asks one neighbour at a time
               (a random one that has a piece it lacks and did not turn it
               away in the last half piece time) for the piece rarest among
               its neighbours; a neighbour that is sending already turns the
               request away at once. Control messages take --delay piece
               times one way; pieces take one piece time plus that.
  reserve      serial-pull with each transfer arranged while the one before
               it runs: a request names when the leecher's downlink is free,
               a sender books it if its uplink is free within --slack piece
               times of then (one booking beyond the transfer it runs), or
               turns it away saying when it is free.

  benches/schedules.py oracle --hosts 32 --pieces 96
  benches/schedules.py serial-pull --hosts 32 --pieces 96 --delay 0.02
  benches/schedules.py reserve --hosts 32 --pieces 96 --delay 0.1 --slack 0.3
"""
import argparse
import heapq
import itertools
import random


def neighbours(hosts, degree, rng):
    """A full mesh, or a random graph in which each host has about `degree`."""
    if degree is None or degree >= hosts - 1:
        return [[j for j in range(hosts) if j != i] for i in range(hosts)]
    sets = [set() for _ in range(hosts)]
    for i in range(hosts):
        while len(sets[i]) < degree:
            j = rng.randrange(hosts)
            if j != i and len(sets[j]) < degree * 1.5:
                sets[i].add(j)
                sets[j].add(i)
    return [list(s) for s in sets]


class Events:
    """A virtual clock's events, in time order (ties in the order made)."""

    def __init__(self):
        self.heap, self.order = [], itertools.count()

    def at(self, t, *what):
        heapq.heappush(self.heap, (t, next(self.order)) + what)

    def pop(self):
        t, _, *what = heapq.heappop(self.heap)
        return (t, *what)

    def __bool__(self):
        return bool(self.heap)


class Swarm:
    """Hosts that know each other's pieces only from `have` messages, which
    take `delay` piece times; host 0 is the seed."""

    def __init__(self, hosts, pieces, degree, seed, delay):
        self.rng = random.Random(seed)
        self.nbrs = neighbours(hosts, degree, self.rng)
        self.have = [set() for _ in range(hosts)]
        self.have[0] = set(range(pieces))
        # What each host has heard its neighbours have.
        self.view = [{s: set(self.have[s]) for s in self.nbrs[r]} for r in range(hosts)]
        self.done = [None] * hosts
        self.done[0] = 0.0
        self.events = Events()
        self.pieces, self.delay = pieces, delay

    def rarest(self, r, lack):
        """Of `lack`, a piece fewest of r's neighbours have, as r heard."""
        held = lambda p: sum(1 for q in self.nbrs[r] if p in self.view[r][q])
        return min(lack, key=lambda p: (held(p), self.rng.random()))

    def arrived(self, now, r, p):
        """Piece p is in at r: its neighbours hear of it; r may be done."""
        self.have[r].add(p)
        for q in self.nbrs[r]:
            self.events.at(now + self.delay, "have", r, q, p, 0.0)
        if len(self.have[r]) == self.pieces:
            self.done[r] = now


def figures(done, pieces):
    times = sorted(done[1:])
    return pieces / times[len(times) // 2], pieces / times[-1]


def oracle(hosts, pieces, degree, seed):
    rng = random.Random(seed)
    nbrs = neighbours(hosts, degree, rng)
    have = [set() for _ in range(hosts)]
    have[0] = set(range(pieces))
    incoming = [set() for _ in range(hosts)]
    count = [0] * pieces  # leechers that hold or receive each piece
    up_free, down_free = [True] * hosts, [True] * hosts
    done = [None] * hosts
    done[0] = 0.0
    events = []

    def assign(now):
        order = list(range(hosts))
        rng.shuffle(order)
        for s in order:
            if not up_free[s] or not have[s]:
                continue
            best = None
            for r in nbrs[s]:
                if not down_free[r] or done[r] is not None:
                    continue
                lack = have[s] - have[r] - incoming[r]
                if not lack:
                    continue
                p = min(lack, key=lambda p: (count[p], rng.random()))
                key = (count[p], len(have[r]), rng.random())
                if best is None or key < best[0]:
                    best = (key, r, p)
            if best:
                _, r, p = best
                up_free[s] = down_free[r] = False
                incoming[r].add(p)
                count[p] += 1
                heapq.heappush(events, (now + 1.0, s, r, p))

    assign(0.0)
    while events:
        now = events[0][0]
        while events and events[0][0] == now:
            _, s, r, p = heapq.heappop(events)
            up_free[s] = down_free[r] = True
            incoming[r].discard(p)
            have[r].add(p)
            if len(have[r]) == pieces:
                done[r] = now
        assign(now)
    return figures(done, pieces)


def serial_pull(hosts, pieces, degree, seed, delay):
    sw = Swarm(hosts, pieces, degree, seed, delay)
    rng, nbrs, have, view, done = sw.rng, sw.nbrs, sw.have, sw.view, sw.done
    events, at = sw.events, sw.events.at
    turned_away = [dict() for _ in range(hosts)]
    sending = [False] * hosts
    asked = [None] * hosts  # the piece a leecher waits for

    def ask(now, r):
        if done[r] is not None or asked[r] is not None:
            return
        options = []
        for s in nbrs[r]:
            if turned_away[r].get(s, -1.0) > now:
                continue
            lack = view[r][s] - have[r]
            if lack:
                options.append((s, lack))
        if not options:
            return
        s, lack = rng.choice(options)
        p = sw.rarest(r, lack)
        asked[r] = p
        at(now + delay, "request", s, r, p, 0.0)

    for r in range(1, hosts):
        ask(0.0, r)
    while events:
        now, kind, s, r, p, _ = events.pop()
        if kind == "request":
            if sending[s]:
                at(now + delay, "turned away", s, r, p, 0.0)
            else:
                sending[s] = True
                at(now + 1.0, "sent", s, r, p, 0.0)
        elif kind == "turned away":
            asked[r] = None
            turned_away[r][s] = now + 0.5
            ask(now, r)
        elif kind == "sent":
            sending[s] = False
            at(now + delay, "arrived", s, r, p, 0.0)
            for q in nbrs[s]:
                ask(now, q)
        elif kind == "arrived":
            asked[r] = None
            sw.arrived(now, r, p)
            ask(now, r)
        elif kind == "have":
            view[r][s].add(p)
            ask(now, r)
    return figures(done, pieces)


def reserve(hosts, pieces, degree, seed, delay, slack):
    sw = Swarm(hosts, pieces, degree, seed, delay)
    rng, nbrs, have, view, done = sw.rng, sw.nbrs, sw.have, sw.view, sw.done
    events, at = sw.events, sw.events.at
    free_hint = [dict() for _ in range(hosts)]  # when a sender said it is free
    up_free_at, up_booked = [0.0] * hosts, [0] * hosts
    down_free_at, down_booked = [0.0] * hosts, [0] * hosts
    asking = [False] * hosts
    coming = [set() for _ in range(hosts)]  # pieces asked or booked

    def ask(now, r):
        if done[r] is not None or asking[r] or down_booked[r] > 1:
            return
        start = max(now + delay, down_free_at[r])
        options = []
        for s in nbrs[r]:
            lack = view[r][s] - have[r] - coming[r]
            if lack:
                options.append((free_hint[r].get(s, 0.0), rng.random(), s, lack))
        if not options:
            return
        free = [o for o in options if o[0] <= start]
        _, _, s, lack = rng.choice(free) if free else min(options)
        p = sw.rarest(r, lack)
        asking[r] = True
        coming[r].add(p)
        at(now + delay, "request", s, r, p, start)

    for r in range(1, hosts):
        ask(0.0, r)
    while events:
        now, kind, s, r, p, t = events.pop()
        if kind == "request":
            start = max(t, up_free_at[s], now)
            if start - t <= slack and up_booked[s] <= 1:
                up_free_at[s] = start + 1.0
                up_booked[s] += 1
                at(start + 1.0, "sent", s, r, p, 0.0)
                at(now + delay, "booked", s, r, p, start + 1.0)
            else:
                at(now + delay, "turned away", s, r, p, up_free_at[s])
        elif kind == "booked":
            asking[r] = False
            down_booked[r] += 1
            down_free_at[r] = max(down_free_at[r], t)
            ask(now, r)
        elif kind == "turned away":
            asking[r] = False
            coming[r].discard(p)
            free_hint[r][s] = t
            ask(now, r)
        elif kind == "sent":
            up_booked[s] -= 1
            at(now + delay, "arrived", s, r, p, 0.0)
        elif kind == "arrived":
            down_booked[r] -= 1
            coming[r].discard(p)
            sw.arrived(now, r, p)
            ask(now, r)
        elif kind == "have":
            view[r][s].add(p)
            ask(now, r)
    return figures(done, pieces)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", choices=["oracle", "serial-pull", "reserve"])
    ap.add_argument("--hosts", type=int, default=32, help="seed included")
    ap.add_argument("--pieces", type=int, default=96)
    ap.add_argument("--degree", type=int, help="neighbours a host (default: all)")
    ap.add_argument("--delay", type=float, default=0.02,
                    help="serial-pull, reserve: one-way control delay, in piece times")
    ap.add_argument("--slack", type=float, default=0.3,
                    help="reserve: how late a booking may start, in piece times")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    for seed in range(a.runs):
        if a.model == "oracle":
            med, last = oracle(a.hosts, a.pieces, a.degree, seed)
        elif a.model == "serial-pull":
            med, last = serial_pull(a.hosts, a.pieces, a.degree, seed, a.delay)
        else:
            med, last = reserve(a.hosts, a.pieces, a.degree, seed, a.delay, a.slack)
        print(f"run {seed + 1}: median {med:.2f} last {last:.2f} (piece times, before TCP headers)")


if __name__ == "__main__":
    main()
