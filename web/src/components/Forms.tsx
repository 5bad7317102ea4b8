import { type FormEvent, type ReactNode, useState } from "react";
import { describeError } from "../api/client";

/*
 * The pages' forms share one way to send: the button says "Saving…" while the request is
 * out, the API's refusal (its detail and field errors) shows beside the form as an alert,
 * and a form that closes or resets does so only once what it saved is shown.
 */

/** Submit handling: `submit` runs `action` once at a time; its error is kept for `FormError`. */
export function useSubmit(action: (form: HTMLFormElement) => Promise<unknown>) {
  const [error, setError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const submit = async (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    if (busy) return;
    const form = event.currentTarget;
    setBusy(true);
    setError(undefined);
    try {
      await action(form);
    } catch (failure) {
      setError(describeError(failure));
    } finally {
      setBusy(false);
    }
  };
  return {
    error,
    busy,
    submit: (event: FormEvent<HTMLFormElement>) => void submit(event),
    clear: () => setError(undefined),
  };
}

export function FormError({ error }: { error: string | undefined }) {
  if (!error) return null;
  return (
    <p className="notice notice-error" role="alert">
      {error}
    </p>
  );
}

export function SubmitButton({ busy, label, small }: { busy: boolean; label: string; small?: boolean }) {
  return (
    <button type="submit" className={`button button-primary${small ? " button-small" : ""}`} disabled={busy}>
      {busy ? "Saving…" : label}
    </button>
  );
}

/** A form in a card that reports the API's refusal beside it and resets after success. */
export function FormCard({
  title,
  submitLabel,
  onSubmit,
  children,
}: {
  title: string;
  submitLabel: string;
  onSubmit(): Promise<unknown>;
  children: ReactNode;
}) {
  const { error, busy, submit } = useSubmit(async (form) => {
    await onSubmit();
    form.reset();
  });
  return (
    <form className="card" aria-label={title} onSubmit={submit}>
      <h2>{title}</h2>
      {children}
      <FormError error={error} />
      <div className="form-actions">
        <SubmitButton busy={busy} label={submitLabel} />
      </div>
    </form>
  );
}

/**
 * What a table cell shows, with a button that turns it into a small form in place. The form
 * closes once `onSave` (which refetches what the cell shows) has finished; a refusal keeps
 * it open with the reason.
 */
export function InlineEditor({
  summary,
  changeLabel,
  changeText = "Change",
  formLabel,
  saveLabel,
  onOpen,
  onSave,
  children,
}: {
  summary: ReactNode;
  /** The button's accessible name ("Change the members of QA"). */
  changeLabel: string;
  changeText?: string;
  formLabel: string;
  saveLabel: string;
  /** Sets the form's fields from what is saved now. */
  onOpen(): void;
  onSave(): Promise<unknown>;
  children: ReactNode;
}) {
  const [editing, setEditing] = useState(false);
  const { error, busy, submit, clear } = useSubmit(async () => {
    await onSave();
    setEditing(false);
  });
  if (!editing) {
    return (
      <>
        {summary}{" "}
        <button
          type="button"
          className="button button-small"
          aria-label={changeLabel}
          onClick={() => {
            onOpen();
            clear();
            setEditing(true);
          }}
        >
          {changeText}
        </button>
      </>
    );
  }
  return (
    <form onSubmit={submit} aria-label={formLabel} className="inline-editor">
      {children}
      <FormError error={error} />
      <div className="form-actions">
        <SubmitButton busy={busy} label={saveLabel} small />
        <button type="button" className="button button-small" onClick={() => setEditing(false)}>
          Cancel
        </button>
      </div>
    </form>
  );
}

/**
 * A labelled choice of one named record (a project, an environment, a role) by its slug;
 * `none` names an empty first choice (the value "") where choosing nothing means something.
 */
export function SlugSelect({
  label,
  value,
  onChange,
  items,
  none,
}: {
  label: string;
  value: string;
  onChange(slug: string): void;
  items: readonly { id: string; slug: string; name: string }[] | undefined;
  none?: string;
}) {
  return (
    <label>
      {label}
      <select value={value} onChange={(event) => onChange(event.target.value)}>
        {none !== undefined && <option value="">{none}</option>}
        {items?.map((each) => (
          <option key={each.id} value={each.slug}>
            {each.name}
          </option>
        ))}
      </select>
    </label>
  );
}
