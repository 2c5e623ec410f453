//! The `plura-forwarder` binary: everything lives in the library's [`plura_forwarder::cli`].

fn main() -> std::process::ExitCode {
    plura_forwarder::cli::main()
}
