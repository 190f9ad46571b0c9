//! Frame encode and decode: every message type, and piece frames of 16 KiB,
//! 256 KiB and 1 MiB.
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use p2pft::protocol::bitfield::Bitfield;
use p2pft::protocol::layout::Layout;
use p2pft::protocol::wire::{encode, Limits, Message};
use std::hint::black_box;

fn control_messages(num_pieces: u32) -> Vec<(&'static str, Message)> {
    vec![
        ("choke", Message::Choke),
        ("unchoke", Message::Unchoke),
        ("interested", Message::Interested),
        ("not_interested", Message::NotInterested),
        ("have", Message::Have(num_pieces - 1)),
        ("bitfield", Message::Bitfield(Bitfield::full(num_pieces))),
        ("request", Message::Request(num_pieces / 2)),
    ]
}

/// Encoding `m` into a reused buffer, and decoding its frame.
fn encode_and_decode<P: std::fmt::Display>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: P,
    m: &Message,
    limits: &Limits,
) {
    let frame = p2pft::protocol::wire::encode_to_vec(m);
    let mut out = Vec::with_capacity(frame.len());
    g.bench_function(BenchmarkId::new("encode", &id), |b| {
        b.iter(|| {
            out.clear();
            encode(black_box(m), &mut out);
        })
    });
    g.bench_function(BenchmarkId::new("decode", &id), |b| {
        b.iter(|| limits.decode_frame(black_box(&frame)).unwrap())
    });
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("control");
    let layout = Layout::new(2000 * 16384, 16384).unwrap();
    let limits = Limits::new(layout);
    for (name, m) in control_messages(layout.num_pieces()) {
        encode_and_decode(&mut g, name, &m, &limits);
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
        g.throughput(Throughput::Bytes(u64::from(size)));
        encode_and_decode(&mut g, size, &m, &limits);
        g.bench_function(BenchmarkId::new("header_only", size), |b| {
            b.iter(|| p2pft::protocol::wire::piece_header(black_box(3), size))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
