// Headless Chromium through playwright-core (the system Chromium; no browser download), with
// the flags of DESIGN §9. `webgpu: false` leaves WebGPU switched off.
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

export async function launch({ webgpu = true } = {}) {
  const args = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
  ];
  args.push(webgpu ? "--enable-unsafe-webgpu" : "--disable-features=WebGPU");
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args });
}

/** A page that records console errors and uncaught exceptions into `page.errors`. */
export async function newPage(browser) {
  const page = await browser.newPage();
  page.errors = [];
  page.on("console", (m) => {
    if (m.type() === "error") page.errors.push(m.text());
  });
  page.on("pageerror", (e) => page.errors.push(String(e)));
  return page;
}
