import type { TaskState } from "../api/types";

/** Every state has a symbol and words, never colour alone (the colour only repeats them). */
const LOOK: Record<TaskState, { symbol: string; label: string }> = {
  queued: { symbol: "◷", label: "queued" },
  running: { symbol: "⟳", label: "running" },
  waiting: { symbol: "⏸", label: "waiting for a decision" },
  succeeded: { symbol: "✔", label: "succeeded" },
  failed: { symbol: "✖", label: "failed" },
  cancelled: { symbol: "⊘", label: "cancelled" },
  interrupted: { symbol: "⚠", label: "interrupted" },
};

export function stateLabel(state: TaskState): string {
  return LOOK[state].label;
}

export function StateBadge({ state, short = false }: { state: TaskState; short?: boolean }) {
  const look = LOOK[state];
  return (
    <span className={`state state-${state}`}>
      <span aria-hidden="true" className="state-symbol">
        {look.symbol}
      </span>{" "}
      {short && state === "waiting" ? (
        <>
          waiting<span className="visually-hidden"> for a decision</span>
        </>
      ) : (
        look.label
      )}
    </span>
  );
}
