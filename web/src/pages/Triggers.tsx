import { useQuery, useQueryClient } from "@tanstack/react-query";
import { type ReactNode, useId, useState } from "react";
import { useParams } from "react-router";
import type { Process } from "../../../src/domain/process.js";
import { api, describeError, query } from "../api/client";
import { useProgression, useProject } from "../api/hooks";
import type { FeedTrigger, Page, ScheduledTrigger } from "../api/types";
import { Breadcrumbs } from "../components/Breadcrumbs";
import { DataTable } from "../components/DataTable";
import { ErrorNotice, Loading } from "../components/ErrorNotice";
import { FormError, SlugSelect, SubmitButton, useSubmit } from "../components/Forms";
import { RelativeTime } from "../components/RelativeTime";
import { useTitle } from "../lib/title";

/**
 * A project's triggers (docs/triggers.md): feed triggers (a pushed image tag becomes a
 * release deployed to the first phase) and scheduled triggers (on a cron expression, what
 * one environment runs is deployed to another). Each shows whether it is active or paused,
 * in words, and its last firing: when, why and what it did. The project's administrators
 * pause, resume and add them here; a feed trigger's secret is write-only: typed once, never
 * shown again.
 */
export function TriggersPage() {
  const { project: slug = "" } = useParams();
  const client = useQueryClient();
  const project = useProject(slug);
  const progression = useProgression(slug, { limit: 1, offset: 0 });
  const name = project.data?.name ?? slug;
  useTitle(`${name} triggers`);
  const base = `/projects/${encodeURIComponent(slug)}`;
  const feed = useQuery({
    queryKey: ["triggers", slug, "feed"],
    queryFn: () => api<Page<FeedTrigger>>("GET", `${base}/triggers${query({ limit: 500 })}`),
    // Firings happen on their own (a push, a poll, a schedule): look again now and then.
    refetchInterval: 15_000,
  });
  const scheduled = useQuery({
    queryKey: ["triggers", slug, "scheduled"],
    queryFn: () => api<Page<ScheduledTrigger>>("GET", `${base}/scheduled-triggers${query({ limit: 500 })}`),
    refetchInterval: 15_000,
  });
  const mayAdminister = progression.data?.environments.some((each) => each.permissions.includes("administer")) ?? false;
  const [creating, setCreating] = useState<"feed" | "scheduled" | undefined>();
  const refresh = () => client.invalidateQueries({ queryKey: ["triggers", slug] });
  const environments = progression.data?.environments.map((each) => each.environment) ?? [];

  return (
    <section className="page page-wide" aria-labelledby="triggers-title">
      <Breadcrumbs
        trail={[{ label: "Dashboard", to: "/" }, { label: name, to: `/projects/${slug}` }, { label: "Triggers" }]}
      />
      <div className="page-header">
        <h1 id="triggers-title">Triggers of {name}</h1>
        <div className="actions">
          {mayAdminister && creating === undefined && (
            <>
              <button type="button" className="button" onClick={() => setCreating("feed")}>
                Add feed trigger
              </button>
              <button type="button" className="button button-primary" onClick={() => setCreating("scheduled")}>
                Add scheduled trigger
              </button>
            </>
          )}
        </div>
      </div>
      {creating === "feed" && (
        <FeedTriggerForm
          project={slug}
          onDone={async () => {
            await refresh();
            setCreating(undefined);
          }}
          onCancel={() => setCreating(undefined)}
        />
      )}
      {creating === "scheduled" && (
        <ScheduledTriggerForm
          project={slug}
          environments={environments}
          onDone={async () => {
            await refresh();
            setCreating(undefined);
          }}
          onCancel={() => setCreating(undefined)}
        />
      )}

      <h2 id="feed-title">Feed triggers</h2>
      <p className="small muted">
        A new tag of one of the project's images creates a release and deploys it to the lifecycle's first phase.
      </p>
      {feed.isPending && <Loading what="the feed triggers" />}
      <ErrorNotice error={feed.error} what="The feed triggers could not be loaded" />
      {feed.data?.items.length === 0 && (
        <p className="empty">
          No feed trigger. Add one here, or with <code>ferry trigger create</code> (its secret is read from standard
          input).
        </p>
      )}
      {feed.data && feed.data.items.length > 0 && (
        <TriggerTable
          labelledBy="feed-title"
          columns={["Watches"]}
          triggers={feed.data.items}
          mayAdminister={mayAdminister}
          pathOf={(trigger) => `${base}/triggers/${encodeURIComponent(trigger.id)}`}
          onDone={refresh}
          stateNote={(trigger) =>
            trigger.lastError && (
              <p className="reason">
                <span aria-hidden="true">⚠ </span>last poll failed: {trigger.lastError}
              </p>
            )
          }
          cells={(trigger) => (
            <td className="small">
              image <span className="mono">{trigger.image}</span>
              {trigger.versionFromTag && (
                <>
                  , version from <span className="mono">{trigger.versionFromTag}</span>
                </>
              )}
              <br />
              registry notifications to <span className="mono">POST {trigger.hookPath}</span>
              <br />
              {trigger.pollSeconds === null
                ? "notifications only"
                : `notifications, and polls every ${trigger.pollSeconds} s`}
              {trigger.lastPolledAt && (
                <>
                  {" "}
                  (last poll <RelativeTime at={trigger.lastPolledAt} />)
                </>
              )}
            </td>
          )}
        />
      )}

      <h2 id="scheduled-title">Scheduled triggers</h2>
      <p className="small muted">
        On a cron expression, the release one environment runs is deployed to another, as a promotion (the lifecycle,
        freezes and locks apply).
      </p>
      {scheduled.isPending && <Loading what="the scheduled triggers" />}
      <ErrorNotice error={scheduled.error} what="The scheduled triggers could not be loaded" />
      {scheduled.data?.items.length === 0 && <p className="empty">No scheduled trigger.</p>}
      {scheduled.data && scheduled.data.items.length > 0 && (
        <TriggerTable
          labelledBy="scheduled-title"
          columns={["Schedule", "Next firing"]}
          triggers={scheduled.data.items}
          mayAdminister={mayAdminister}
          pathOf={(trigger) => `${base}/scheduled-triggers/${encodeURIComponent(trigger.id)}`}
          onDone={refresh}
          cells={(trigger) => (
            <>
              <td className="small">
                <span className="mono">{trigger.cron}</span> ({trigger.timeZone})
                <br />
                {trigger.from} → {trigger.to}
              </td>
              <td>
                {trigger.nextFireAt ? (
                  <RelativeTime at={trigger.nextFireAt} />
                ) : (
                  <span className="muted">{trigger.paused ? "none while paused" : "never again"}</span>
                )}
              </td>
            </>
          )}
        />
      )}
    </section>
  );
}

type Firing = { at: string; cause: string; outcome: string };

/**
 * The table both kinds of trigger share: name, state, the kind's own columns, last firing
 * and, for the project's administrators, pause or resume.
 */
function TriggerTable<T extends { id: string; name: string; paused: boolean; lastFiring: Firing | null }>({
  labelledBy,
  columns,
  triggers,
  mayAdminister,
  pathOf,
  onDone,
  stateNote,
  cells,
}: {
  labelledBy: string;
  /** The headers of the kind's own columns, between State and Last firing. */
  columns: readonly string[];
  triggers: readonly T[];
  mayAdminister: boolean;
  /** The trigger's API path, where pausing sends its PATCH. */
  pathOf(trigger: T): string;
  onDone(): Promise<unknown>;
  /** What the State cell shows under the state, if anything. */
  stateNote?(trigger: T): ReactNode;
  /** The kind's own cells (`<td>` elements), one per column. */
  cells(trigger: T): ReactNode;
}) {
  return (
    <DataTable
      labelledBy={labelledBy}
      columns={["Trigger", "State", ...columns, "Last firing", ...(mayAdminister ? ["Actions"] : [])]}
    >
      {triggers.map((trigger) => (
        <tr key={trigger.id}>
          <th scope="row">{trigger.name}</th>
          <td>
            <PausedState paused={trigger.paused} />
            {stateNote?.(trigger)}
          </td>
          {cells(trigger)}
          <td>
            <LastFiring firing={trigger.lastFiring} />
          </td>
          {mayAdminister && (
            <td>
              <PauseButton name={trigger.name} paused={trigger.paused} path={pathOf(trigger)} onDone={onDone} />
            </td>
          )}
        </tr>
      ))}
    </DataTable>
  );
}

/** Active or paused, in words and a sign. */
function PausedState({ paused }: { paused: boolean }) {
  return paused ? (
    <span className="state state-cancelled">
      <span aria-hidden="true">⏸ </span>paused
    </span>
  ) : (
    <span className="state state-succeeded">
      <span aria-hidden="true">▶ </span>active
    </span>
  );
}

function LastFiring({ firing }: { firing: Firing | null }) {
  if (!firing) return <span className="muted">not fired yet</span>;
  return (
    <>
      <RelativeTime at={firing.at} /> <span className="tag">{firing.cause}</span>
      <p className="reason">{firing.outcome}</p>
    </>
  );
}

function PauseButton({
  name,
  paused,
  path,
  onDone,
}: {
  name: string;
  paused: boolean;
  path: string;
  onDone(): Promise<unknown>;
}) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | undefined>();
  const toggle = async () => {
    setBusy(true);
    setError(undefined);
    try {
      await api("PATCH", path, { paused: !paused });
      await onDone();
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
        className="button button-small"
        disabled={busy}
        aria-label={`${paused ? "Resume" : "Pause"} ${name}`}
        onClick={() => void toggle()}
      >
        {paused ? "Resume" : "Pause"}
      </button>
      <FormError error={error} />
    </>
  );
}

function ScheduledTriggerForm({
  project,
  environments,
  onDone,
  onCancel,
}: {
  project: string;
  environments: readonly { id: string; slug: string; name: string }[];
  onDone(): Promise<void>;
  onCancel(): void;
}) {
  const [name, setName] = useState("");
  const [cron, setCron] = useState("0 2 * * *");
  const [timeZone, setTimeZone] = useState("UTC");
  const [from, setFrom] = useState(environments[0]?.slug ?? "");
  const [to, setTo] = useState(environments[1]?.slug ?? "");
  const { error, busy, submit } = useSubmit(async () => {
    await api("POST", `/projects/${encodeURIComponent(project)}/scheduled-triggers`, {
      name,
      cron,
      timeZone,
      from,
      to,
    });
    await onDone();
  });
  return (
    <form className="card" onSubmit={submit} aria-label="Add a scheduled trigger">
      <div className="form-grid">
        <label>
          Name
          <input name="name" required value={name} onChange={(event) => setName(event.target.value)} />
        </label>
        <label>
          Cron expression
          <input name="cron" required className="mono" value={cron} onChange={(event) => setCron(event.target.value)} />
        </label>
        <label>
          Time zone
          <input name="timeZone" required value={timeZone} onChange={(event) => setTimeZone(event.target.value)} />
        </label>
        <SlugSelect label="Deploy what runs in" items={environments} value={from} onChange={setFrom} />
        <SlugSelect label="To" items={environments} value={to} onChange={setTo} />
      </div>
      <p className="small muted">Five fields (minute hour day month weekday), read in the time zone.</p>
      <FormError error={error} />
      <div className="form-actions">
        <SubmitButton busy={busy} label="Add scheduled trigger" />
        <button type="button" className="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}

/**
 * Poll seconds as typed: empty is notifications only (null); a number goes as one; anything
 * else goes as typed, for the API to refuse naming the field (never quietly turned into null).
 */
function pollSecondsOf(text: string): number | string | null {
  const trimmed = text.trim();
  if (trimmed === "") return null;
  return /^\d+$/.test(trimmed) ? Number(trimmed) : trimmed;
}

function FeedTriggerForm({
  project,
  onDone,
  onCancel,
}: {
  project: string;
  onDone(): Promise<void>;
  onCancel(): void;
}) {
  const process = useQuery({
    queryKey: ["process", project],
    queryFn: () => api<Process>("GET", `/projects/${encodeURIComponent(project)}/process`),
  });
  const images = process.data?.images ?? [];
  const [name, setName] = useState("");
  const [image, setImage] = useState("");
  const [versionFromTag, setVersionFromTag] = useState("");
  const [pollSeconds, setPollSeconds] = useState("");
  const [secret, setSecret] = useState("");
  const secretHelp = useId();
  const pollHelp = useId();
  const { error, busy, submit } = useSubmit(async () => {
    await api("POST", `/projects/${encodeURIComponent(project)}/triggers`, {
      name,
      image: image || images[0]?.name || "",
      versionFromTag: versionFromTag === "" ? null : versionFromTag,
      pollSeconds: pollSecondsOf(pollSeconds),
      secret,
    });
    setSecret("");
    await onDone();
  });
  return (
    <form className="card" onSubmit={submit} aria-label="Add a feed trigger">
      <ErrorNotice error={process.error} what="The project's images could not be loaded" />
      {process.data && images.length === 0 && (
        <p className="notice notice-error" role="alert">
          The project's process has no image: add one to the process first.
        </p>
      )}
      <div className="form-grid">
        <label>
          Name
          <input name="name" required value={name} onChange={(event) => setName(event.target.value)} />
        </label>
        <label>
          Image
          <select value={image || images[0]?.name || ""} onChange={(event) => setImage(event.target.value)}>
            {images.map((each) => (
              <option key={each.name} value={each.name}>
                {each.name} ({each.repository})
              </option>
            ))}
          </select>
        </label>
        <label>
          Version from tag (optional)
          <input
            name="versionFromTag"
            className="mono"
            placeholder="^(\d+\.\d+\.\d+)-beta$"
            value={versionFromTag}
            onChange={(event) => setVersionFromTag(event.target.value)}
          />
        </label>
        <label>
          Poll every (seconds)
          <input
            name="pollSeconds"
            inputMode="numeric"
            aria-describedby={pollHelp}
            value={pollSeconds}
            onChange={(event) => setPollSeconds(event.target.value)}
          />
          <span id={pollHelp} className="small muted">
            Empty: registry notifications only. 10 to 86400 seconds.
          </span>
        </label>
        <label>
          Secret
          <input
            name="secret"
            type="password"
            required
            autoComplete="new-password"
            aria-describedby={secretHelp}
            value={secret}
            onChange={(event) => setSecret(event.target.value)}
          />
          <span id={secretHelp} className="small muted">
            The registry sends it as Authorization: Bearer &lt;secret&gt;. Write-only: never shown again.
          </span>
        </label>
      </div>
      <FormError error={error} />
      <div className="form-actions">
        <SubmitButton busy={busy} label="Add feed trigger" />
        <button type="button" className="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}
