// The page's wording and countdown (src/notice.ts), on the compiled JavaScript, by Node's own test runner:
//   TZ=UTC node --test test/notice.test.mjs   (after `jlpm build:prod` or `pip install .`, which write lib/)
// Run with TZ=UTC: local times are what the page shows, and these tests name them.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  MAX_MESSAGE,
  clockOffset,
  formatClock,
  formatCountdown,
  formatDuration,
  nextStep,
  noticeDetails,
  noticeMessage,
  parseState
} from '../lib/notice.js';

const T = Date.parse('2026-12-06T13:10:00Z');

function notice(overrides = {}) {
  return {
    id: 'n1',
    warned_at: '2026-12-06T13:05:00Z',
    cull_at: '2026-12-06T14:05:00Z',
    idle_since: '2026-12-06T12:15:00Z',
    reason: 'idle',
    limit: 'timeout',
    limit_seconds: 6600,
    rule: 'rules[1] (groups=overnight -> timeout=86400)',
    activity: 'running code in a notebook or typing in a terminal; an open browser tab alone does not count',
    keepable: true,
    ...overrides
  };
}

test('the times are read in UTC', () => {
  assert.equal(new Date(T).getHours(), 13, 'run these tests with TZ=UTC');
});

test('an idle notice reads as the issue words it, with a countdown', () => {
  assert.equal(
    noticeMessage(notice(), T),
    'Idle for 55 minutes: this server will be stopped at 14:05 (in 55:00) unless you use it.'
  );
});

test('the countdown moves with the clock, and the idle time with it', () => {
  const first = noticeMessage(notice(), T);
  const second = noticeMessage(notice(), T + 1000);
  assert.match(second, /\(in 54:59\)/);
  assert.notEqual(first, second);
  assert.match(noticeMessage(notice(), T + 65 * 60_000), /^Idle for 2 hours: /);
  assert.match(noticeMessage(notice(), T + 54 * 60_000 + 59_500), /\(in 0:01\) unless you use it\.$/);
});

test('past the cull time it says so instead of counting below zero', () => {
  const message = noticeMessage(notice(), Date.parse('2026-12-06T14:05:30Z'));
  assert.equal(message, 'Idle for 1 hour 50 minutes: this server will be stopped any moment now unless you use it.');
});

test('a max_age notice says it cannot be kept and to save work', () => {
  const message = noticeMessage(
    notice({ reason: 'max_age', limit: 'max_age', limit_seconds: 8 * 3600, idle_since: null, keepable: false }),
    T
  );
  assert.equal(
    message,
    'This server reaches its maximum age of 8 hours and will be stopped at 14:05 (in 55:00). ' +
      'It cannot be kept: save your work now.'
  );
});

test('the other reasons, and reasons this page does not know yet', () => {
  assert.match(noticeMessage(notice({ reason: 'kernels_idle' }), T), /^No code has run for 55 minutes: /);
  assert.match(
    noticeMessage(notice({ reason: 'busy_expired', limit: 'max_busy', limit_seconds: 7200, idle_since: null }), T),
    /^Busy for longer than its limit of 2 hours: this server will be stopped at 14:05/
  );
  assert.equal(
    noticeMessage(notice({ reason: 'something_new', idle_since: null }), T),
    'This server will be stopped at 14:05 (in 55:00) unless you use it.'
  );
});

test('every message fits JupyterLab’s 140-character cut, the countdown kept', () => {
  const far = notice({
    reason: 'max_age',
    limit: 'max_age',
    limit_seconds: 364 * 86400 + 23 * 3600,
    cull_at: '2027-11-30T23:59:00Z',
    idle_since: null,
    keepable: false
  });
  const longest = [
    far,
    notice({ reason: 'kernels_idle', idle_since: '2026-01-01T00:00:00Z', cull_at: '2026-12-12T23:59:00Z' }),
    notice({ reason: 'busy_expired', limit_seconds: 364 * 86400 + 23 * 3600, cull_at: '2027-11-30T23:59:00Z' })
  ];
  for (const item of longest) {
    const message = noticeMessage(item, T);
    assert.ok(message.length <= MAX_MESSAGE, `${message.length}: ${message}`);
    assert.match(message, /\(in \d+:\d\d:\d\d\)/);
  }
});

test('durations, countdowns and clock times', () => {
  assert.equal(formatDuration(59), 'less than a minute');
  assert.equal(formatDuration(60), '1 minute');
  assert.equal(formatDuration(3599), '59 minutes');
  assert.equal(formatDuration(3600), '1 hour');
  assert.equal(formatDuration(3660), '1 hour 1 minute');
  assert.equal(formatDuration(2 * 86400 + 3600), '2 days 1 hour');
  assert.equal(formatDuration(-5), 'less than a minute');
  assert.equal(formatCountdown(599.2), '10:00');
  assert.equal(formatCountdown(599), '9:59');
  assert.equal(formatCountdown(3903), '1:05:03');
  assert.equal(formatCountdown(-3), '0:00');
  const now = new Date(T);
  assert.equal(formatClock(new Date('2026-12-06T14:05:00Z'), now), '14:05');
  assert.equal(formatClock(new Date('2026-12-08T09:00:00Z'), now), 'Tue 09:00');
  assert.equal(formatClock(new Date('2026-12-24T09:00:00Z'), now), '2026-12-24 09:00');
});

test('the server’s clock corrects the browser’s', () => {
  // A browser two minutes slow: the offset brings its clock to the server's, and the countdown with it.
  const browserNow = T - 120_000;
  const offset = clockOffset('2026-12-06T13:10:00Z', browserNow);
  assert.equal(offset, 120_000);
  assert.equal(noticeMessage(notice(), browserNow + offset), noticeMessage(notice(), T));
  assert.notEqual(noticeMessage(notice(), browserNow), noticeMessage(notice(), T));
  // Microseconds, as the server writes them.
  assert.equal(clockOffset('2026-12-06T13:10:00.250000Z', T), 250);
});

test('the state is parsed defensively', () => {
  const state = { notice: notice(), keep: null, now: '2026-12-06T13:10:00Z' };
  assert.deepEqual(parseState(state), state);
  assert.equal(parseState(null), null);
  assert.equal(parseState({ notice: null, keep: null }), null);
  assert.equal(parseState({ ...state, notice: { ...notice(), keepable: 'yes' } }).notice, null);
  assert.equal(parseState({ ...state, notice: { ...notice(), cull_at: 'soon' } }).notice, null);
  const keep = { notice_id: 'n1', requested_at: '2026-12-06T13:09:00Z' };
  assert.deepEqual(parseState({ ...state, keep }).keep, keep);
  assert.equal(parseState({ ...state, keep: { notice_id: 5, requested_at: keep.requested_at } }).keep, null);
});

test('what the page does with each notice it reads', () => {
  const none = new Set();
  assert.equal(nextStep(null, null, none), 'none');
  assert.equal(nextStep(null, notice(), none), 'show');
  assert.equal(nextStep(notice(), notice({ cull_at: '2026-12-06T14:10:00Z' }), none), 'update');
  assert.equal(nextStep(notice(), notice({ id: 'n2' }), none), 'replace');
  assert.equal(nextStep(notice(), notice({ keepable: false }), none), 'replace');
  assert.equal(nextStep(notice(), null, none), 'hide');
  // Dismissed in this page: not shown again, and a newer notice is.
  const dismissed = new Set(['n1']);
  assert.equal(nextStep(null, notice(), dismissed), 'none');
  assert.equal(nextStep(null, notice({ id: 'n2' }), dismissed), 'show');
});

test('the details name the rule, the limit and what counts as use', () => {
  const details = Object.fromEntries(noticeDetails(notice(), T));
  assert.equal(details['Set by'], 'rules[1] (groups=overnight -> timeout=86400)');
  assert.equal(details['Limit'], 'idle limit: 1 hour 50 minutes');
  assert.match(details['What counts as use'], /open browser tab alone does not count/);
  assert.match(details['Can it be kept?'], /^Yes/);
  const global = Object.fromEntries(noticeDetails(notice({ rule: null, keepable: false }), T));
  assert.equal(global['Set by'], "the culler's global options");
  assert.match(global['Can it be kept?'], /^No: save your work/);
});
