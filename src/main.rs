//! The `stackc` binary: parse arguments, run, exit with the command's code.

/// A large build allocates and frees millions of small strings on several
/// threads; mimalloc does that with far less time in the allocator and
/// the kernel than the system allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    stackc::timing::init();
    stackc::cli::main()
}
