// The composer: Enter sends, Shift+Enter inserts a new line (and Enter while an input method
// is composing is left alone), Escape stops a running reply. Send and Stop swap while a reply
// runs.

export class Composer {
  constructor({ form, input, send, stop, onSend, onStop }) {
    this.input = input;
    this.sendBtn = send;
    this.stopBtn = stop;
    this.running = false;
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.submit(onSend);
    });
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.submit(onSend);
      } else if (e.key === 'Escape' && this.running) {
        onStop();
      }
    });
    stop.addEventListener('click', () => onStop());
  }

  submit(onSend) {
    const text = this.input.value.trim();
    if (!text || this.running) return;
    this.input.value = '';
    onSend(text);
  }

  setRunning(on) {
    this.running = on;
    this.sendBtn.hidden = on;
    this.stopBtn.hidden = !on;
    // Focus stays in the message box (Escape stops); a focused Stop that disappears hands it back.
    if (!on && (document.activeElement === this.stopBtn || document.activeElement === document.body)) this.input.focus({ preventScroll: true });
  }
}
