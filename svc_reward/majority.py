"""The built-in `majority` reward server: agreement with the group's own majority answer
(self-consistency, TTRL-style). It needs no reference answer, so it trains without labels.

Run alone:  JETRL_LISTEN=0.0.0.0:50055 python -m svc_reward.majority
and name it in a run spec:  reward: {endpoint: HOST:50055}. The rule: svc_reward/consensus.py.
"""

from svc_reward.agreement import AgreementServicer, serve_alone, texts
from svc_reward.consensus import majority_rewards

SERVICER = AgreementServicer("majority", "1", lambda request: majority_rewards(texts(request.views[0])))

if __name__ == "__main__":
    serve_alone(SERVICER)
