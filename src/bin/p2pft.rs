fn main() {
    std::process::exit(p2pft::cli::main_p2pft());
}
