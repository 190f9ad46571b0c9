//! SHA-1 of one piece at 16 KiB, 256 KiB and 1 MiB with the crate we use (it
//! picks the SHA-NI instructions at run time where the CPU has them), of two
//! pieces at once as readers verify them (`sha1pair`, throughput counted for
//! both), against the ceiling of any one-pass digest: reading the same bytes
//! from memory.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

fn read_once(data: &[u8]) -> u64 {
    data.chunks_exact(8).fold(0u64, |acc, w| {
        acc ^ u64::from_le_bytes(w.try_into().unwrap())
    })
}

fn bench(c: &mut Criterion) {
    #[cfg(target_arch = "x86_64")]
    eprintln!(
        "CPU SHA extensions (SHA-NI): {}",
        if std::arch::is_x86_feature_detected!("sha") {
            "yes"
        } else {
            "no"
        }
    );
    let mut g = c.benchmark_group("hash");
    for size in [16usize << 10, 256 << 10, 1 << 20] {
        let data = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("sha1", size), |b| {
            b.iter(|| p2pft::integrity::meta::sha1(black_box(&data)))
        });
        let other = vec![0xa5u8; size];
        g.throughput(Throughput::Bytes(2 * size as u64));
        g.bench_function(BenchmarkId::new("sha1_pair", size), |b| {
            b.iter(|| p2pft::integrity::sha1pair::sha1_pair(black_box(&data), black_box(&other)))
        });
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("memory_read_ceiling", size), |b| {
            b.iter(|| read_once(black_box(&data)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
