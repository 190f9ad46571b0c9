//! `peerProcess <PeerID>`: the course project's entry point.
#![allow(non_snake_case)]

fn main() {
    std::process::exit(p2pft::app::cli::main_peer_process());
}
