import { exactTime, relativeTime, useNow } from "../lib/time";

/** "3 min ago", with the exact local time on hover and for assistive technology. */
export function RelativeTime({ at }: { at: string | null | undefined }) {
  const now = useNow();
  if (!at) return <span className="muted">—</span>;
  const exact = exactTime(at);
  // The shared clock ticks every 15 s: a time that arrived since the last tick (a health
  // check, a live update) is newer than it, and would read "in 10 s". Read the clock then.
  const current = Date.parse(at) > now ? Date.now() : now;
  return (
    <time dateTime={at} title={exact}>
      {relativeTime(at, current)}
    </time>
  );
}
