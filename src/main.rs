fn main() {
    std::process::exit(w4b::cli::main());
}
