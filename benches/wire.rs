//! Frame encode and decode: every message type, and piece frames of 16 KiB,
//! 256 KiB and 1 MiB.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use p2pft::bitfield::Bitfield;
use p2pft::layout::Layout;
use p2pft::wire::{encode, Limits, Message};
use std::hint::black_box;

fn messages(num_pieces: u32, piece: usize) -> Vec<(&'static str, Message)> {
    vec![
        ("choke", Message::Choke),
        ("unchoke", Message::Unchoke),
        ("interested", Message::Interested),
        ("not_interested", Message::NotInterested),
        ("have", Message::Have(num_pieces - 1)),
        ("bitfield", Message::Bitfield(Bitfield::full(num_pieces))),
        ("request", Message::Request(num_pieces / 2)),
        (
            "piece",
            Message::Piece {
                index: 1,
                data: vec![0xab; piece].into(),
            },
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("control");
    let layout = Layout::new(2000 * 16384, 16384).unwrap();
    let limits = Limits::new(layout);
    for (name, m) in messages(layout.num_pieces(), 16384)
        .into_iter()
        .filter(|(n, _)| *n != "piece")
    {
        let frame = p2pft::wire::encode_to_vec(&m);
        let mut out = Vec::with_capacity(1024);
        g.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| {
                out.clear();
                encode(black_box(&m), &mut out);
            })
        });
        g.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| limits.decode_frame(black_box(&frame)).unwrap())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("piece");
    for size in [16 << 10, 256 << 10, 1 << 20] {
        let layout = Layout::new(8 * size as u64, size).unwrap();
        let limits = Limits::new(layout);
        let m = Message::Piece {
            index: 3,
            data: vec![0xab; size as usize].into(),
        };
        let frame = p2pft::wire::encode_to_vec(&m);
        let mut out = Vec::with_capacity(frame.len());
        g.throughput(Throughput::Bytes(u64::from(size)));
        g.bench_function(BenchmarkId::new("encode", size), |b| {
            b.iter(|| {
                out.clear();
                encode(black_box(&m), &mut out);
            })
        });
        g.bench_function(BenchmarkId::new("decode", size), |b| {
            b.iter(|| limits.decode_frame(black_box(&frame)).unwrap())
        });
        g.bench_function(BenchmarkId::new("header_only", size), |b| {
            b.iter(|| p2pft::wire::piece_header(black_box(3), size))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
