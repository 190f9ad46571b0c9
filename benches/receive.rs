//! The receive path of one piece as a peer runs it: the frame's bytes off a
//! socket buffer (here an in-memory reader) into a pooled buffer, SHA-1
//! verified against the metadata, stored the way a peer stores a piece from a
//! p2pft neighbour: with direct I/O (`direct`, the default; pieces under
//! 64 KiB are gathered into 256 KiB granules, so at 16 KiB every 16th piece
//! writes its granule with one vectored write) and through the page cache
//! (`buffered`). Each piece is stored once, in order, into a fresh 64 MiB
//! file (made and removed outside the timed part), as in a download.
//!
//! Read the buffered figure with care: pages of a file just made and removed
//! come back warm, so it measures a copy into warm memory. A download fills
//! fresh pages, which the swarm bench (`p2pft bench --buffered-io`) measures.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use p2pft::protocol::layout::Layout;
use p2pft::protocol::wire::{encode_to_vec, Limits, Message};
use p2pft::runtime::net::read_frame;
use p2pft::runtime::store::Store;
use p2pft::support::piecebuf::BufferPool;
use std::hint::black_box;
use std::time::{Duration, Instant};

const FILE_BYTES: u64 = 64 << 20;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("receive_piece");
    for size in [16u32 << 10, 256 << 10, 1 << 20] {
        let layout = Layout::new(FILE_BYTES, size).unwrap();
        let n = layout.num_pieces();
        let limits = Limits::new(layout);
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let hash = p2pft::integrity::meta::sha1(&data);
        let frames: Vec<Vec<u8>> = (0..n)
            .map(|index| {
                encode_to_vec(&Message::Piece {
                    index,
                    data: data.as_slice().into(),
                })
            })
            .collect();
        for (mode, direct_io) in [("direct", true), ("buffered", false)] {
            let path = dir.path().join(format!("f{size}-{mode}"));
            let pool = BufferPool::new(0, 0);
            g.throughput(Throughput::Bytes(u64::from(size)));
            let id = BenchmarkId::new(format!("decode_verify_write_{mode}"), size);
            g.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let _ = std::fs::remove_file(&path);
                        let store = Store::open_leecher(&path, layout, direct_io, true).unwrap();
                        let pass = left.min(u64::from(n)) as usize;
                        let start = Instant::now();
                        for frame in &frames[..pass] {
                            let mut socket = black_box(&frame[..]);
                            let Message::Piece { index, data } =
                                read_frame(&mut socket, &limits, &pool).unwrap()
                            else {
                                unreachable!()
                            };
                            assert_eq!(p2pft::integrity::meta::sha1(&data), hash);
                            store
                                .put_piece(index, data, true, &mut |_, buf| pool.give(buf))
                                .unwrap();
                        }
                        store
                            .write_held(false, &mut |_, buf| pool.give(buf))
                            .unwrap();
                        timed += start.elapsed();
                        left -= pass as u64;
                    }
                    timed
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
