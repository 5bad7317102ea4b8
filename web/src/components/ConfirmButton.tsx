import { type ReactNode, useId, useRef, useState } from "react";
import { api, describeError } from "../api/client";

/**
 * A button that asks before it acts (a native modal dialog: focus moves into it and back,
 * Escape cancels), then shows what went wrong if the action failed.
 */
export function ConfirmButton({
  label,
  title,
  children,
  confirmLabel,
  onConfirm,
  className = "button",
  disabled = false,
  describedBy,
  withComment = false,
}: {
  label: string;
  title: string;
  children?: ReactNode;
  confirmLabel?: string;
  onConfirm(comment: string): Promise<unknown>;
  className?: string;
  disabled?: boolean;
  describedBy?: string;
  withComment?: boolean;
}) {
  const dialog = useRef<HTMLDialogElement>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | undefined>();
  const [comment, setComment] = useState("");
  const titleId = useId();
  const commentId = useId();

  const confirm = async () => {
    setBusy(true);
    setError(undefined);
    try {
      await onConfirm(comment);
      setComment("");
      dialog.current?.close();
    } catch (failure) {
      setError(describeError(failure));
    } finally {
      setBusy(false);
    }
  };

  return (
    <>
      <button
        type="button"
        className={className}
        disabled={disabled}
        aria-describedby={describedBy}
        onClick={() => {
          setError(undefined);
          dialog.current?.showModal();
        }}
      >
        {label}
      </button>
      <dialog ref={dialog} aria-labelledby={titleId}>
        <h2 id={titleId}>{title}</h2>
        {children}
        {withComment && (
          <label htmlFor={commentId}>
            Comment (optional)
            <textarea id={commentId} value={comment} onChange={(event) => setComment(event.target.value)} />
          </label>
        )}
        {error && (
          <p className="notice notice-error" role="alert">
            {error}
          </p>
        )}
        <div className="form-actions">
          <button type="button" className="button button-primary" disabled={busy} onClick={() => void confirm()}>
            {busy ? "Working…" : (confirmLabel ?? label)}
          </button>
          <button type="button" className="button" onClick={() => dialog.current?.close()}>
            Cancel
          </button>
        </div>
      </dialog>
    </>
  );
}

/**
 * Delete, after a confirmation whose `children` say what follows: sends DELETE to `path`,
 * then `onDeleted` (which refetches the list) before the dialog closes.
 */
export function DeleteButton({
  title,
  path,
  onDeleted,
  children,
}: {
  title: string;
  path: string;
  onDeleted(): Promise<unknown>;
  children: ReactNode;
}) {
  return (
    <ConfirmButton
      label="Delete"
      title={title}
      className="button button-small button-danger"
      onConfirm={async () => {
        await api("DELETE", path);
        await onDeleted();
      }}
    >
      {children}
    </ConfirmButton>
  );
}
