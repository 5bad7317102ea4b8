import { fileURLToPath } from "node:url";
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

/**
 * The web dashboard: built into dist/web, which `ferry server` serves at / (src/api/webUi.ts).
 * `npx vite --config web/vite.config.ts` serves it with hot reload; /api goes to the Ferry
 * server at FERRY_URL (default http://127.0.0.1:8080).
 */
export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  base: "/",
  publicDir: false,
  plugins: [react()],
  build: {
    outDir: fileURLToPath(new URL("../dist/web", import.meta.url)),
    emptyOutDir: true,
    assetsDir: "assets",
    // No inline data: URLs for assets: the Content-Security-Policy allows files from this origin.
    assetsInlineLimit: 0,
    sourcemap: false,
    target: "es2022",
  },
  server: {
    proxy: { "/api": { target: process.env.FERRY_URL ?? "http://127.0.0.1:8080", changeOrigin: false } },
  },
});
