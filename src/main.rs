//! The `plura-forwarder` binary: everything lives in the library's [`plura_forwarder::cli`].

/// mimalloc for every allocation of the process, librdkafka's too (see `malloc.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    plura_forwarder::cli::main()
}
