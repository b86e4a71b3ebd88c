/**
 * The page's side of the notice: it polls the server's notice, shows it as a notification with a live
 * countdown, and asks the server to keep running when the user says so.
 *
 * Requires nothing but the front end itself, so the same plugin runs in JupyterLab and in Notebook 7.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { clockOffset, INotice, IState, nextStep, noticeDetails, noticeMessage, parseState } from './notice';

/** How often an open page asks for the notice. */
const POLL_MS = 30_000;
/** How long one request may take before the page gives up on it (and asks again at the next poll). */
const REQUEST_MS = 10_000;
const API_PATH = 'api/trio-culler/v1';

class NoticeWatcher {
  constructor(settings: ServerConnection.ISettings) {
    this._settings = settings;
  }

  start(): void {
    void this.poll();
    window.setInterval(() => void this.poll(), POLL_MS);
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') {
        void this.poll();
      }
    });
    // Capturing, so that it runs before the toast's own handler (see _onClose).
    document.addEventListener('click', event => this._onClose(event), true);
  }

  /**
   * The close button (x) of JupyterLab's toasts only hides the toast; the next update of the notification, a
   * second later, would show it again. Closing the warning's toast therefore dismisses the notice in this page.
   * The toast's element carries the notification's id.
   */
  private _onClose(event: Event): void {
    const id = this._notificationId;
    const target = event.target instanceof Element ? event.target : null;
    const button = target?.closest('.jp-Notification-Toast-Close');
    if (id === null || this._shown === null || !button) {
      return;
    }
    for (let element: Element | null = button; element !== null; element = element.parentElement) {
      if (element.id === id) {
        this._dismissed.add(this._shown.id);
        this._hide();
        return;
      }
    }
  }

  /** Reads the notice and shows what it says. Errors are quiet: the next poll asks again. */
  async poll(): Promise<void> {
    if (this._polling || this._stopped) {
      return;
    }
    this._polling = true;
    try {
      const state = await this._request('GET', 'notice');
      if (state !== null) {
        this._apply(state);
      }
    } catch {
      // The server may be restarting, the network down, the session expired: nothing the user can act on.
    } finally {
      this._polling = false;
    }
  }

  private async _request(method: string, path: string, body?: unknown): Promise<IState | null> {
    const url = URLExt.join(this._settings.baseUrl, API_PATH, path);
    const abort = new AbortController();
    const timer = window.setTimeout(() => abort.abort(), REQUEST_MS);
    try {
      const init: RequestInit = { method, signal: abort.signal, cache: 'no-store' };
      if (body !== undefined) {
        init.body = JSON.stringify(body);
        init.headers = { 'Content-Type': 'application/json' };
      }
      // makeRequest adds the server's token and the XSRF header that jupyter_server checks.
      const response = await ServerConnection.makeRequest(url, init, this._settings);
      if (response.status === 404) {
        // The server does not have the extension's server part: asking again will not change that.
        this._stopped = true;
        return null;
      }
      if (!response.ok) {
        throw new ServerConnection.ResponseError(response);
      }
      const state = parseState(await response.json());
      if (state !== null) {
        this._offset = clockOffset(state.now, Date.now());
      }
      return state;
    } finally {
      window.clearTimeout(timer);
    }
  }

  private _now(): number {
    return Date.now() + this._offset;
  }

  private _apply(state: IState): void {
    const notice = state.notice;
    switch (nextStep(this._shown, notice, this._dismissed)) {
      case 'none':
        return;
      case 'hide':
        this._hide();
        return;
      case 'replace':
        this._hide();
        this._show(notice!);
        return;
      case 'show':
        this._show(notice!);
        return;
      case 'update':
        this._shown = notice;
        this._tick();
        return;
    }
  }

  private _show(notice: INotice): void {
    const actions: Notification.IAction[] = [];
    if (notice.keepable) {
      actions.push({
        label: 'Keep running',
        caption: 'Tell the culler that you are using this server',
        displayType: 'accent',
        callback: event => {
          // The warning stays until the server confirms; a failed request leaves it there to try again.
          event.preventDefault();
          void this._keep(notice.id);
        }
      });
    }
    actions.push({
      label: 'Details',
      caption: 'Why and when this server will be stopped',
      callback: event => {
        event.preventDefault();
        void this._details();
      }
    });
    this._shown = notice;
    this._notificationId = Notification.warning(noticeMessage(notice, this._now()), {
      autoClose: false,
      actions
    });
    this._ticker = window.setInterval(() => this._tick(), 1000);
  }

  /** Moves the countdown on; notices that the user dismissed the notification (in the notification center). */
  private _tick(): void {
    if (this._shown === null || this._notificationId === null) {
      return;
    }
    const updated = Notification.update({
      id: this._notificationId,
      message: noticeMessage(this._shown, this._now())
    });
    if (!updated) {
      // Dismissed by the user: not shown again in this page.
      this._dismissed.add(this._shown.id);
      this._stopShowing();
    }
  }

  private _hide(): void {
    if (this._notificationId !== null) {
      Notification.dismiss(this._notificationId);
    }
    this._stopShowing();
  }

  private _stopShowing(): void {
    window.clearInterval(this._ticker);
    this._shown = null;
    this._notificationId = null;
  }

  private async _keep(noticeId: string): Promise<void> {
    let state: IState | null = null;
    let problem = 'the server did not answer as expected';
    try {
      state = await this._request('POST', 'keep', { notice_id: noticeId });
    } catch (error) {
      problem = String(error);
    }
    if (state === null) {
      Notification.error(`Could not ask the server to keep running: ${problem}`.slice(0, 140), {
        autoClose: 10_000
      });
      return;
    }
    this._apply(state);
    if (state.notice === null || state.notice.id !== noticeId) {
      Notification.success('This server keeps running: the culler counts this as using it.', {
        autoClose: 5_000
      });
    }
  }

  private async _details(): Promise<void> {
    if (this._shown === null) {
      return;
    }
    const body = new Widget();
    const list = document.createElement('dl');
    for (const [label, text] of noticeDetails(this._shown, this._now())) {
      // Text nodes only: the notice's strings come from the server and are never parsed as markup.
      const term = document.createElement('dt');
      term.textContent = label;
      term.style.fontWeight = 'bold';
      const value = document.createElement('dd');
      value.textContent = text;
      list.append(term, value);
    }
    body.node.appendChild(list);
    await showDialog({
      title: 'When and why this server will be stopped',
      body,
      buttons: [Dialog.okButton({ label: 'Close' })]
    });
  }

  private readonly _settings: ServerConnection.ISettings;
  private readonly _dismissed = new Set<string>();
  private _shown: INotice | null = null;
  private _notificationId: string | null = null;
  private _ticker = 0;
  private _offset = 0;
  private _polling = false;
  private _stopped = false;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'trio-culler-notice:plugin',
  description: 'Warns before trio-culler stops this server, with a countdown and a "Keep running" action.',
  autoStart: true,
  activate: (app: JupyterFrontEnd) => {
    new NoticeWatcher(app.serviceManager.serverSettings).start();
  }
};

export default plugin;
