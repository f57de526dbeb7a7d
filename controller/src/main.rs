//! The controller binary; its logic arrives with the controller issue.
fn main() {
    println!("sessionguard-controller: not implemented yet");
}
