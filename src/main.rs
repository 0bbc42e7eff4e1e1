//! The `roomcache` command: see [`roomcache::cli`].

fn main() -> std::process::ExitCode {
    roomcache::cli::run()
}
