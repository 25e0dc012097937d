//! The `convoy` binary. Its commands arrive with the daemon and CLI work; until then it says so.

fn main() {
    eprintln!("{{\"Error\": \"convoy is not implemented yet in this build\"}}");
    std::process::exit(1);
}
