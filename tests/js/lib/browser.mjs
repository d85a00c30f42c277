// Headless Chromium through playwright-core (the system Chromium; no browser download), with
// the flags of DESIGN §9. `webgpu: false` leaves WebGPU switched off.
import { chromium } from "playwright-core";
import { chromiumFlags } from "./flags.mjs";

export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

export async function launch({ webgpu = true } = {}) {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: chromiumFlags({ webgpu }) });
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
