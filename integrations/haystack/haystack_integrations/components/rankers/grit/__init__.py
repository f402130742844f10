# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
from haystack_integrations.components.rankers.grit.ranker import GritRanker

__all__ = ["GritRanker"]
