import { useEffect, useState, useSyncExternalStore } from "react";

/** "3 min ago", "in 2 h", "just now": coarse on purpose; the exact time is in the tooltip. */
export function relativeTime(iso: string, now: number): string {
  const seconds = Math.round((now - Date.parse(iso)) / 1000);
  const past = seconds >= 0;
  const size = Math.abs(seconds);
  const say = (amount: number, unit: string) => (past ? `${amount} ${unit} ago` : `in ${amount} ${unit}`);
  if (size < 10) return "just now";
  if (size < 60) return say(size, "s");
  if (size < 3600) return say(Math.floor(size / 60), "min");
  if (size < 86_400) return say(Math.floor(size / 3600), "h");
  if (size < 86_400 * 60) return say(Math.floor(size / 86_400), size < 86_400 * 2 ? "day" : "days");
  return dateFormat.format(new Date(iso));
}

// One formatter each: toLocaleString builds a new one per call, which cost the dashboard's
// first rows (hundreds of cells, each with a tooltip) a good part of their render.
const dateFormat = new Intl.DateTimeFormat(undefined);
const exactFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "long" });

/** The exact local time with its zone, for a tooltip. */
export function exactTime(iso: string): string {
  return exactFormat.format(new Date(iso));
}

/** "1.2 s", "3 min 4 s", "2 h 5 min". */
export function formatDuration(milliseconds: number): string {
  if (milliseconds < 1000) return `${Math.max(0, Math.round(milliseconds))} ms`;
  const seconds = milliseconds / 1000;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.floor(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

// One clock for every relative time on the page: they all change together, once per tick.
let now = Date.now();
const listeners = new Set<() => void>();
let timer: ReturnType<typeof setInterval> | undefined;

function subscribe(listener: () => void): () => void {
  listeners.add(listener);
  timer ??= setInterval(() => {
    now = Date.now();
    for (const each of listeners) each();
  }, 15_000);
  return () => {
    listeners.delete(listener);
    if (listeners.size === 0 && timer !== undefined) {
      clearInterval(timer);
      timer = undefined;
    }
  };
}

/** The current time, re-rendering every 15 s. */
export function useNow(): number {
  return useSyncExternalStore(
    subscribe,
    () => now,
    () => now,
  );
}

/** The current time every second while `running` (a running step's duration counts up). */
export function useSecondsWhile(running: boolean): number {
  const slow = useNow();
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!running) return;
    setNow(Date.now());
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, [running]);
  return running ? Math.max(now, slow) : slow;
}
