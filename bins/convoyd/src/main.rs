//! The `convoyd` binary. Its commands arrive with the daemon and CLI work; until then it says so.

fn main() {
    eprintln!("{{\"Error\": \"convoyd is not implemented yet in this build\"}}");
    std::process::exit(1);
}
