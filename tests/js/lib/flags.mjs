// Chromium's command line for every headless run of this repository (DESIGN §9): no sandbox
// (root), none of the background traffic this machine's closed network refuses, and WebGPU on
// SwiftShader when asked for (switched off otherwise). Shared by the tests and bench/.
// `hardwareGpu`: WebGPU on the machine's own GPU through Vulkan (`cargo xtask bench-real-gpu`);
// headless Chromium otherwise keeps to its software adapter on Linux.
export function chromiumFlags({ webgpu = true, hardwareGpu = false } = {}) {
  const gpu = hardwareGpu
    ? ["--enable-features=Vulkan,VulkanFromANGLE", "--use-angle=vulkan", "--ignore-gpu-blocklist", "--disable-vulkan-surface"]
    : [];
  return [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    webgpu ? "--enable-unsafe-webgpu" : "--disable-features=WebGPU",
    ...gpu,
  ];
}

/** Whether a WebGPU adapter's info (`GPUAdapterInfo` as the pages report it) names a software renderer. */
export function isSoftwareAdapter(info) {
  if (!info) return true;
  const text = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" ").toLowerCase();
  return info.isFallbackAdapter === true || /swiftshader|llvmpipe|lavapipe|software|microsoft basic/.test(text);
}
