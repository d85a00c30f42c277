// Chromium's command line for every headless run of this repository (DESIGN §9): no sandbox
// (root), none of the background traffic this machine's closed network refuses, and WebGPU on
// SwiftShader when asked for (switched off otherwise). Shared by the tests and bench/.
export function chromiumFlags({ webgpu = true } = {}) {
  return [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    webgpu ? "--enable-unsafe-webgpu" : "--disable-features=WebGPU",
  ];
}
