//! Bitfield operations at 1 and 100,000 pieces: wire round trip, interest
//! test, copying, counting, and picking a random wanted piece, among half the pieces
//! (a draw finds one) and among 16 (the draws miss: the exact passes); and
//! picking the rarest, by one pass (`pick_rarest`) and from the sorted
//! counts (`Rarity::pick`), all tied, counts spread, and 16 wanted.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use p2pft::policy::picker::{pick_random, pick_rarest};
use p2pft::policy::rarity::Rarity;
use p2pft::protocol::bitfield::Bitfield;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::hint::black_box;

fn half(n: u32, odd: bool) -> Bitfield {
    let mut b = Bitfield::empty(n);
    for i in (0..n).filter(|i| (i % 2 == 1) == odd) {
        b.set(i, true);
    }
    b
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("bitfield");
    for n in [1u32, 100_000] {
        let theirs = half(n, false);
        let mut mine = half(n, true);
        if n == 1 {
            mine = Bitfield::empty(1);
        }
        let wire = theirs.as_wire().to_vec();
        let mut rng = StdRng::seed_from_u64(1);
        g.bench_function(BenchmarkId::new("from_wire", n), |b| {
            b.iter(|| Bitfield::from_wire(black_box(&wire), n).unwrap())
        });
        g.bench_function(BenchmarkId::new("interest", n), |b| {
            b.iter(|| black_box(&theirs).has_any_missing_from(black_box(&mine)))
        });
        g.bench_function(BenchmarkId::new("clone", n), |b| {
            b.iter(|| black_box(&theirs).clone())
        });
        g.bench_function(BenchmarkId::new("count", n), |b| {
            b.iter(|| black_box(&theirs).count())
        });
        g.bench_function(BenchmarkId::new("set_and_clear", n), |b| {
            let mut f = theirs.clone();
            b.iter(|| {
                f.set(black_box(n - 1), true);
                f.set(black_box(n - 1), false);
            })
        });
        let wanted = Bitfield::full(n);
        g.bench_function(BenchmarkId::new("pick_random", n), |b| {
            b.iter(|| pick_random(black_box(&theirs), black_box(&wanted), &mut rng))
        });
        let mut scarce = Bitfield::empty(n);
        for i in (0..n).step_by((n as usize / 16).max(1)) {
            scarce.set(i, true);
        }
        g.bench_function(BenchmarkId::new("pick_random_of_16", n), |b| {
            b.iter(|| pick_random(black_box(&wanted), black_box(&scarce), &mut rng))
        });
        // Every neighbour has every piece: all are tied.
        let level = vec![3u32; n as usize];
        g.bench_function(BenchmarkId::new("pick_rarest_all_tied", n), |b| {
            b.iter(|| pick_rarest(black_box(&theirs), black_box(&wanted), &level, &mut rng))
        });
        // Counts 0-7 spread over the pieces.
        let spread: Vec<u32> = (0..n)
            .map(|i| (i.wrapping_mul(2_654_435_761)) >> 29)
            .collect();
        g.bench_function(BenchmarkId::new("pick_rarest_spread", n), |b| {
            b.iter(|| pick_rarest(black_box(&theirs), black_box(&wanted), &spread, &mut rng))
        });
        // The same counts kept sorted, as the core keeps them.
        let mut rarity = Rarity::new(n);
        for (i, &c) in level.iter().enumerate() {
            (0..c).for_each(|_| rarity.add(i as u32));
        }
        g.bench_function(BenchmarkId::new("rarity_pick_all_tied", n), |b| {
            b.iter(|| rarity.pick(black_box(&theirs), black_box(&wanted), &mut rng))
        });
        let mut rarity = Rarity::new(n);
        for (i, &c) in spread.iter().enumerate() {
            (0..c).for_each(|_| rarity.add(i as u32));
        }
        g.bench_function(BenchmarkId::new("rarity_pick_spread", n), |b| {
            b.iter(|| rarity.pick(black_box(&theirs), black_box(&wanted), &mut rng))
        });
        // The end of a download: 16 pieces wanted, none of them rare.
        g.bench_function(BenchmarkId::new("rarity_pick_of_16", n), |b| {
            b.iter(|| rarity.pick(black_box(&theirs), black_box(&scarce), &mut rng))
        });
        g.bench_function(BenchmarkId::new("pick_rarest_of_16", n), |b| {
            b.iter(|| pick_rarest(black_box(&theirs), black_box(&scarce), &spread, &mut rng))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
