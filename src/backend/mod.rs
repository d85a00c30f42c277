//! Where the head's arithmetic runs. `cpu` (ndarray) is the reference every other backend
//! is checked against.

pub mod cpu;
