fn main() {
    std::process::exit(p2pft::app::cli::main_p2pft());
}
