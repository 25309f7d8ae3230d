package wasm

// supported: the sandbox host needs mmap of memfds at fixed addresses.
const supported = true
