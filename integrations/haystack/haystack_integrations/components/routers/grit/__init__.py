# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
from haystack_integrations.components.routers.grit.answerability_router import GritAnswerabilityRouter

__all__ = ["GritAnswerabilityRouter"]
