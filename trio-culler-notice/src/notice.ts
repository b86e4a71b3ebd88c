/**
 * The notice, in words: what the page shows, computed from the server's state and a clock.
 *
 * Pure (no JupyterLab, no DOM, no timers), so that Node's own test runner checks it on the compiled JavaScript
 * (test/notice.test.mjs). The shape of the state is docs/notice-api.md's.
 */

/** JupyterLab cuts a notification's message at this many characters. */
export const MAX_MESSAGE = 140;

export interface INotice {
  id: string;
  warned_at: string;
  cull_at: string;
  idle_since: string | null;
  reason: string;
  limit: string;
  limit_seconds: number;
  rule: string | null;
  activity: string;
  keepable: boolean;
}

export interface IKeep {
  notice_id: string | null;
  requested_at: string;
}

export interface IState {
  notice: INotice | null;
  keep: IKeep | null;
  now: string;
}

/** What the page does with a notice it has just read. */
export type Step = 'none' | 'show' | 'update' | 'replace' | 'hide';

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isTime(value: unknown): value is string {
  return typeof value === 'string' && !Number.isNaN(Date.parse(value));
}

function parseNotice(value: unknown): INotice | null {
  if (!isObject(value)) {
    return null;
  }
  const v = value;
  const ok =
    typeof v.id === 'string' &&
    isTime(v.warned_at) &&
    isTime(v.cull_at) &&
    (v.idle_since === null || isTime(v.idle_since)) &&
    typeof v.reason === 'string' &&
    typeof v.limit === 'string' &&
    typeof v.limit_seconds === 'number' &&
    Number.isFinite(v.limit_seconds) &&
    (v.rule === null || typeof v.rule === 'string') &&
    typeof v.activity === 'string' &&
    typeof v.keepable === 'boolean';
  return ok ? (v as unknown as INotice) : null;
}

/**
 * The state from an answer's parsed JSON, or null when it is not one (the page then acts as if it had not
 * asked). A notice that does not parse is treated as no notice.
 */
export function parseState(value: unknown): IState | null {
  if (!isObject(value) || !isTime(value.now)) {
    return null;
  }
  const keep = value.keep;
  const keepOk =
    isObject(keep) &&
    (keep.notice_id === null || typeof keep.notice_id === 'string') &&
    isTime(keep.requested_at);
  return {
    notice: parseNotice(value.notice),
    keep: keepOk ? (keep as unknown as IKeep) : null,
    now: value.now
  };
}

/**
 * How far the browser's clock is behind the server's, in milliseconds: add it to `Date.now()` to read the
 * server's time. The request's own travel time (well under a second) is ignored.
 */
export function clockOffset(serverNow: string, localNow: number): number {
  return Date.parse(serverNow) - localNow;
}

function plural(count: number, unit: string): string {
  return `${count} ${unit}${count === 1 ? '' : 's'}`;
}

/** "less than a minute", "55 minutes", "2 hours 5 minutes", "3 days 1 hour". */
export function formatDuration(seconds: number): string {
  const minutes = Math.floor(Math.max(0, seconds) / 60);
  if (minutes < 1) {
    return 'less than a minute';
  }
  if (minutes < 60) {
    return plural(minutes, 'minute');
  }
  const hours = Math.floor(minutes / 60);
  if (hours < 24) {
    const rest = minutes % 60;
    return rest ? `${plural(hours, 'hour')} ${plural(rest, 'minute')}` : plural(hours, 'hour');
  }
  const days = Math.floor(hours / 24);
  const rest = hours % 24;
  return rest ? `${plural(days, 'day')} ${plural(rest, 'hour')}` : plural(days, 'day');
}

function pad(value: number): string {
  return String(value).padStart(2, '0');
}

/** The time left, as a clock counts it down: "9:59", "1:05:03" (rounded up, so it reads 0:00 only at the end). */
export function formatCountdown(seconds: number): string {
  const total = Math.max(0, Math.ceil(seconds));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = total % 60;
  return hours ? `${hours}:${pad(minutes)}:${pad(secs)}` : `${minutes}:${pad(secs)}`;
}

const WEEKDAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];

function localDay(at: Date): number {
  return Date.UTC(at.getFullYear(), at.getMonth(), at.getDate()) / 86_400_000;
}

/**
 * A moment in the browser's local time, on a 24-hour clock: "14:05" today, "Tue 14:05" within the week ahead,
 * "2026-12-24 14:05" further off.
 */
export function formatClock(at: Date, now: Date): string {
  const time = `${pad(at.getHours())}:${pad(at.getMinutes())}`;
  const days = localDay(at) - localDay(now);
  if (days === 0) {
    return time;
  }
  if (days > 0 && days < 7) {
    return `${WEEKDAYS[at.getDay()]} ${time}`;
  }
  return `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())} ${time}`;
}

const LIMIT_NAMES: Record<string, string> = {
  timeout: 'idle limit',
  max_age: 'maximum age',
  max_busy: 'limit for busy kernels'
};

function limitName(notice: INotice): string {
  return LIMIT_NAMES[notice.limit] ?? notice.limit;
}

/** The first of the candidates that fits JupyterLab's cut, or the shortest one cut to fit. */
function fit(candidates: string[]): string {
  const fitting = candidates.find(text => text.length <= MAX_MESSAGE);
  if (fitting !== undefined) {
    return fitting;
  }
  const shortest = candidates.reduce((a, b) => (b.length < a.length ? b : a));
  return shortest.slice(0, MAX_MESSAGE - 1) + '…';
}

/**
 * The notification's message at `now` (the server's time, in milliseconds since the epoch), for instance
 * "Idle for 55 minutes: this server will be stopped at 14:05 (in 4:59) unless you use it." Always at most
 * {@link MAX_MESSAGE} characters.
 */
export function noticeMessage(notice: INotice, now: number): string {
  const cullAt = Date.parse(notice.cull_at);
  const left = (cullAt - now) / 1000;
  const when =
    left > 0
      ? `at ${formatClock(new Date(cullAt), new Date(now))} (in ${formatCountdown(left)})`
      : 'any moment now';
  const unless = notice.keepable ? ' unless you use it.' : '. It cannot be kept: save your work now.';
  const stopped = `will be stopped ${when}`;
  const candidates: string[] = [];
  if (notice.reason === 'max_age') {
    const age = formatDuration(notice.limit_seconds);
    candidates.push(`This server reaches its maximum age of ${age} and ${stopped}${unless}`);
  } else if (notice.idle_since !== null && (notice.reason === 'idle' || notice.reason === 'kernels_idle')) {
    const idle = formatDuration((now - Date.parse(notice.idle_since)) / 1000);
    const subject = notice.reason === 'kernels_idle' ? 'No code has run' : 'Idle';
    candidates.push(`${subject} for ${idle}: this server ${stopped}${unless}`);
  } else if (notice.reason === 'busy_expired') {
    const limit = formatDuration(notice.limit_seconds);
    candidates.push(`Busy for longer than its limit of ${limit}: this server ${stopped}${unless}`);
  }
  candidates.push(`This server ${stopped}${unless}`);
  return fit(candidates);
}

/** The notice in full, as label and text pairs, for the "Details" dialog. */
export function noticeDetails(notice: INotice, now: number): Array<[string, string]> {
  const cullAt = new Date(Date.parse(notice.cull_at));
  const details: Array<[string, string]> = [
    ['Stopped at', `${formatClock(cullAt, new Date(now))} (your local time)`],
    ['Limit', `${limitName(notice)}: ${formatDuration(notice.limit_seconds)}`],
    ['Set by', notice.rule ?? "the culler's global options"]
  ];
  if (notice.idle_since !== null) {
    details.push(['Idle since', formatClock(new Date(Date.parse(notice.idle_since)), new Date(now))]);
  }
  details.push(['What counts as use', notice.activity]);
  details.push([
    'Can it be kept?',
    notice.keepable
      ? 'Yes: use it, or click "Keep running", and it starts a new idle period.'
      : 'No: save your work before then.'
  ]);
  return details;
}

/**
 * What to do with the notice just read, given the one shown (or null) and the ids the user dismissed in this
 * page. A notice redelivered with the same id is updated in place, unless it can no longer be kept (or now
 * can), which changes the notification's actions: then it replaces the one shown.
 */
export function nextStep(shown: INotice | null, notice: INotice | null, dismissed: ReadonlySet<string>): Step {
  if (notice === null || dismissed.has(notice.id)) {
    return shown === null ? 'none' : 'hide';
  }
  if (shown === null) {
    return 'show';
  }
  return shown.id === notice.id && shown.keepable === notice.keepable ? 'update' : 'replace';
}
