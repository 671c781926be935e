// mimalloc keeps freed memory for reuse instead of returning it to the kernel and faulting
// it back in: measured on a no-op rebuild of 1,000 steps, page zeroing fell from a third of
// the run time to noise (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(w4b::cli::main());
}
