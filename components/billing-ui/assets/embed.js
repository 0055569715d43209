// <voice-billing>: the billing page in any product, as one element.
//
//   <script src="https://billing.example.com/billing/embed.js"></script>
//   <voice-billing></voice-billing>
//   <script>document.querySelector("voice-billing").token = userToken;</script>
//
// The element frames /billing/ from the origin this script came from and hands the token over
// by postMessage, to that origin only: the token never appears in a URL. Setting `token` again
// (or the `token` attribute) passes a fresh one; when the page finds its token expired, the
// element fires `token-expired`. Attribute `theme`: "light", "dark" or "auto" (the default).
(() => {
  const script = document.currentScript;
  const origin = new URL(script.src, document.baseURI).origin;
  const pageUrl = new URL("/billing/", origin).href;

  class VoiceBilling extends HTMLElement {
    static get observedAttributes() {
      return ["token", "theme"];
    }

    constructor() {
      super();
      this._token = null;
      this._ready = false;
      this._frame = document.createElement("iframe");
      this._frame.title = "Billing";
      this._frame.src = pageUrl;
      this._frame.style.border = "0";
      this._frame.style.width = "100%";
      this._frame.style.minHeight = "480px";
      this._frame.style.display = "block";
      this._onMessage = (event) => {
        if (event.origin !== origin || event.source !== this._frame.contentWindow) return;
        const data = event.data || {};
        if (data.type === "voice-billing:ready") {
          this._ready = true;
          this._send();
        } else if (data.type === "voice-billing:height" && Number.isFinite(data.height)) {
          this._frame.style.height = `${Math.ceil(data.height)}px`;
        } else if (data.type === "voice-billing:token-expired") {
          this.dispatchEvent(new CustomEvent("token-expired", { bubbles: true }));
        }
      };
    }

    connectedCallback() {
      // A token set on the element before this script defined it is an own property that
      // hides the setter: take it over.
      if (Object.prototype.hasOwnProperty.call(this, "token")) {
        const early = this.token;
        delete this.token;
        this.token = early;
      }
      window.addEventListener("message", this._onMessage);
      if (!this._frame.isConnected) this.append(this._frame);
    }

    disconnectedCallback() {
      window.removeEventListener("message", this._onMessage);
    }

    attributeChangedCallback(name, _old, value) {
      if (name === "token") this.token = value;
      else if (name === "theme") this._post({ type: "voice-billing:theme", theme: value || "auto" });
    }

    get token() {
      return this._token;
    }

    set token(value) {
      this._token = value || null;
      this._send();
    }

    _send() {
      if (this._token) this._post({ type: "voice-billing:token", token: this._token });
      const theme = this.getAttribute("theme");
      if (theme) this._post({ type: "voice-billing:theme", theme });
    }

    _post(message) {
      if (this._ready && this._frame.contentWindow) this._frame.contentWindow.postMessage(message, origin);
    }
  }

  if (!customElements.get("voice-billing")) customElements.define("voice-billing", VoiceBilling);
})();
