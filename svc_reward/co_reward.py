"""The built-in `co_reward` reward server (Co-rewarding-I): a sample of question q earns 1 when its
answer equals the majority answer over the samples of q's analogous view q' (views[1]), so no view
can reward its own habits. Label-free. The rule: svc_reward/consensus.py.

Run alone:  JETRL_LISTEN=0.0.0.0:50056 python -m svc_reward.co_reward
"""

from svc_reward.agreement import AgreementServicer, serve_alone, texts
from svc_reward.consensus import co_rewards

SERVICER = AgreementServicer(
    "co_reward",
    "1",
    lambda request: co_rewards(texts(request.views[0]), texts(request.views[1]))[0],
    needs_views=True,
)

if __name__ == "__main__":
    serve_alone(SERVICER)
