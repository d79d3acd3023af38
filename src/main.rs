//! The `stackc` binary: parse arguments, run, exit with the command's code.

/// A large build allocates and frees millions of small strings on several
/// threads; mimalloc does that with far less time in the allocator and
/// the kernel than the system allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    small_pages();
    stackc::timing::init();
    stackc::cli::main()
}

/// A large build touches 100 to 200 MB of fresh memory in under half a
/// second. With transparent huge pages, each first touch of a 2 MB region
/// clears all of it, from a free 2 MB block: on a virtual machine whose
/// host reclaims free memory, such blocks are the reclaimed ones, and the
/// same build took 0.4 s or 1.1 s by turns. With 4 KB pages it takes
/// 0.45 s, steadily (`bench/targets`). Nothing here lives long enough to
/// gain from huge pages.
fn small_pages() {
    #[cfg(target_os = "linux")]
    // Only an optimisation: a kernel without the setting runs as before.
    let _ = nix::sys::prctl::set_thp_disable(true);
}
