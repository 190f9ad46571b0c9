//! The receive path of one piece as a peer runs it: the frame's bytes off a
//! socket buffer (here an in-memory reader) into a pooled buffer, SHA-1
//! verified against the metadata, written at its offset in the file, with
//! direct I/O (the default from 64 KiB pieces: `direct`) and through the page
//! cache (`buffered`).
//!
//! Read the buffered figure with care: rewriting one offset reuses the same
//! page-cache pages, so it measures a copy into warm memory. A download fills
//! fresh pages, which the swarm bench (`p2pft bench --buffered-io`) measures.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use p2pft::layout::Layout;
use p2pft::net::{read_frame, BufferPool};
use p2pft::store::Store;
use p2pft::wire::{encode_to_vec, Limits, Message};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("receive_piece");
    for size in [16u32 << 10, 256 << 10, 1 << 20] {
        let layout = Layout::new(16 * u64::from(size), size).unwrap();
        let limits = Limits::new(layout);
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let hash = p2pft::meta::sha1(&data);
        let frame = encode_to_vec(&Message::Piece {
            index: 5,
            data: data.into(),
        });
        for (mode, direct_io) in [("direct", true), ("buffered", false)] {
            let path = dir.path().join(format!("f{size}-{mode}"));
            let store = Store::open_leecher(&path, layout, direct_io, false).unwrap();
            let pool = BufferPool::new(0, 0);
            g.throughput(Throughput::Bytes(u64::from(size)));
            let id = BenchmarkId::new(format!("decode_verify_write_{mode}"), size);
            g.bench_function(id, |b| {
                b.iter(|| {
                    let mut socket = black_box(&frame[..]);
                    let Message::Piece { index, data } =
                        read_frame(&mut socket, &limits, &pool).unwrap()
                    else {
                        unreachable!()
                    };
                    assert_eq!(p2pft::meta::sha1(&data), hash);
                    store.write_piece(index, &data).unwrap();
                    pool.give(data);
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
