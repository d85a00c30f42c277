// React's plugin for JSX and fast refresh; tacit-rm itself needs nothing from Vite 8.
import react from "@vitejs/plugin-react";

export default { plugins: [react()] };
