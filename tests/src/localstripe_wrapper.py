"""localstripe 1.15.10 as the tests run it: `python3 localstripe_wrapper.py STATE_FILE [localstripe
arguments]`. Its state file is moved to STATE_FILE (parallel tests never share state), and it
gains the parts of Stripe the product uses that localstripe lacks, as Stripe documents them.
Used by tests/src/stripe.rs (the Rust harness) and tests/browser/on_spin.py.
"""
import pickle, sys
import localstripe.resources as resources
state = sys.argv[1]
def load(self):
    try:
        with open(state, 'rb') as f:
            old = pickle.load(f)
            self.clear()
            self.update(old)
    except FileNotFoundError:
        pass
def dump(self):
    with open(state, 'wb') as f:
        pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)
resources.Store.try_load_from_disk = load
resources.Store.dump_to_disk = dump
# Stripe's "pay and save this card": a PaymentIntent with `setup_future_usage` attaches its card
# to the customer only once the payment succeeds, and Stripe.js confirms it with the card typed
# into the page (`payment_method` on confirm). localstripe 1.15.10 has neither.
PI = resources.PaymentIntent
pi_init, pi_confirm, pi_on_success = PI.__init__, PI._api_confirm.__func__, PI._on_success
def init(self, setup_future_usage=None, **kwargs):
    if setup_future_usage not in (None, 'off_session', 'on_session'):
        raise resources.UserError(400, 'Bad request')
    pi_init(self, **kwargs)
    self.setup_future_usage = setup_future_usage
def confirm(cls, id, payment_method=None, **kwargs):
    if payment_method is None:
        return pi_confirm(cls, id, **kwargs)
    if kwargs:
        raise resources.UserError(400, 'Unexpected ' + ', '.join(kwargs.keys()))
    obj = cls._api_retrieve(id)
    resources.PaymentMethod._api_retrieve(payment_method)
    if obj.status not in ('requires_payment_method', 'requires_confirmation'):
        raise resources.UserError(400, 'Bad request')
    obj.payment_method, obj.latest_charge = payment_method, None
    obj._confirm(on_failure_now=obj._report_failure)
    return obj
def on_success(self):
    if getattr(self, 'setup_future_usage', None) and self.customer and self.payment_method:
        card = resources.PaymentMethod._api_retrieve(self.payment_method)
        if card.customer is None:
            card.customer = self.customer
    pi_on_success(self)
PI.__init__, PI._api_confirm, PI._on_success = init, classmethod(confirm), on_success
# Stripe reports a failed 3-D Secure challenge with `payment_intent.payment_failed`;
# localstripe only moves the PaymentIntent back to `requires_payment_method`.
pi_authenticate = PI._api_authenticate.__func__
def authenticate(cls, id, client_secret=None, success=False, **kwargs):
    obj = pi_authenticate(cls, id, client_secret=client_secret, success=success, **kwargs)
    if obj._authentication_failed:
        resources.schedule_webhook(resources.Event('payment_intent.payment_failed', obj))
    return obj
PI._api_authenticate = classmethod(authenticate)
patched = {'/v1/payment_intents/{id}/confirm': PI._api_confirm,
           '/v1/payment_intents/{id}/_authenticate': PI._api_authenticate}
resources.extra_apis[:] = [(m, u, patched.get(u, f)) for (m, u, f) in resources.extra_apis]
from localstripe import server
sys.argv = ['localstripe'] + sys.argv[2:]
server.start()
