import { exactTime, relativeTime, useNow } from "../lib/time";

/** "3 min ago", with the exact local time on hover and for assistive technology. */
export function RelativeTime({ at }: { at: string | null | undefined }) {
  const now = useNow();
  if (!at) return <span className="muted">—</span>;
  const exact = exactTime(at);
  return (
    <time dateTime={at} title={exact}>
      {relativeTime(at, now)}
    </time>
  );
}
