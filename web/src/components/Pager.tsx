/** Newer / older pages of a list, with where we are. */
export function Pager({
  offset,
  total,
  onChange,
  size = 20,
}: {
  offset: number;
  total: number;
  onChange(offset: number): void;
  size?: number;
}) {
  if (total <= size) return null;
  return (
    <nav className="form-actions" aria-label="Pages">
      <button
        type="button"
        className="button"
        disabled={offset === 0}
        onClick={() => onChange(Math.max(0, offset - size))}
      >
        Newer
      </button>
      <span className="muted" aria-live="polite">
        {offset + 1}–{Math.min(total, offset + size)} of {total}
      </span>
      <button
        type="button"
        className="button"
        disabled={offset + size >= total}
        onClick={() => onChange(offset + size)}
      >
        Older
      </button>
    </nav>
  );
}
