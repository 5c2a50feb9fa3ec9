fn main() {
    println!("pigment");
}
