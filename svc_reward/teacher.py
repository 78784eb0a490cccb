"""The built-in `teacher` reward server (Co-rewarding-II): a sample earns 1 when its answer equals
the majority answer of the EMA teacher's samples of the same question (the view named "teacher",
sampled by rollout workers with the teacher's weights; svc_trainer/teacher.py keeps the teacher).
The slowly moving teacher, not the policy itself, sets the pseudo-label, so the policy cannot
reward its own latest habits. Label-free. The answer rule: svc_reward/consensus.py.

Run alone:  JETRL_LISTEN=0.0.0.0:50057 python -m svc_reward.teacher
and give the run a teacher:  teacher: {samples: 4}  (G~ teacher samples per question).
"""

from jetrl.v1 import reward_pb2
from svc_reward.agreement import AgreementServicer, serve_alone, teacher_view, texts
from svc_reward.consensus import Vote, label_rewards


def _rule(request: reward_pb2.ScoreRequest) -> Vote:
    teacher = teacher_view(request)
    if teacher is None:  # Score refuses such a request before asking the rule
        raise ValueError("no teacher view")
    return label_rewards(texts(request.views[0]), texts(teacher))


SERVICER = AgreementServicer("teacher", "1", _rule, needs_teacher_samples=True)

if __name__ == "__main__":
    serve_alone(SERVICER)
