import { describeError } from "../api/client";

export function ErrorNotice({ error, what }: { error: unknown; what?: string }) {
  if (!error) return null;
  return (
    <div className="notice notice-error" role="alert">
      <strong>{what ?? "Something went wrong"}:</strong> {describeError(error)}
    </div>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p className="muted" role="status">
      Loading {what}…
    </p>
  );
}
